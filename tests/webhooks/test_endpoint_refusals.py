"""No server-side request forgery. With the default settings (https only, public addresses
only) every kind of endpoint the server must never call is a 422 on `body.url` at registration;
a name that resolves to such an address when it is called fails that delivery, saying why (the
check is on the address actually connected to, after DNS); redirects are not followed."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from impl.webhooks.addresses import Address
from impl.webhooks.queue import Claim
from impl.webhooks.sender import Sender
from impl.webhooks.transport import AddressRefused, GuardedTransport
from tests.support.factories import User
from tests.support.servers import running_server, settings
from tests.support.webhook_receiver import Receiver, eventually, running_receiver

REFUSED = [
    ("http://hooks.example.com/x", "only https"),
    ("ftp://hooks.example.com/x", "only https"),
    ("file:///etc/passwd", "only https"),
    ("gopher://hooks.example.com/x", "only https"),
    ("https://user:pass@hooks.example.com/x", "user name or password"),
    ("https://localhost/x", "internal name"),
    ("https://LOCALHOST./x", "internal name"),
    ("https://intranet/x", "internal name"),
    ("https://metadata.google.internal/computeMetadata/v1/", "internal name"),
    ("https://127.0.0.1/x", "loopback"),
    ("https://127.1.2.3:8443/x", "loopback"),
    ("https://[::1]/x", "loopback"),
    ("https://[::ffff:127.0.0.1]/x", "loopback"),
    ("https://10.0.0.7/x", "private"),
    ("https://172.16.3.4/x", "private"),
    ("https://192.168.1.1/x", "private"),
    ("https://100.64.0.1/x", "private"),
    ("https://[fc00::1]/x", "private"),
    ("https://169.254.10.10/x", "link-local"),
    ("https://[fe80::1]/x", "link-local"),
    ("https://224.0.0.1/x", "multicast"),
    ("https://[ff02::1]/x", "multicast"),
    ("https://0.0.0.0/x", "unspecified"),
    ("https://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("https://[fd00:ec2::254]/x", "cloud metadata"),
]


@pytest.mark.parametrize(("url", "says"), REFUSED)
async def test_refused_at_registration(client: httpx.AsyncClient, alice: User, url: str,
                                       says: str) -> None:
    refused = await client.post("/api/webhooks", headers=alice.headers,
                                json={"url": url, "event_types": ["task.created"]})
    assert refused.status_code == 422, refused.text
    [detail] = refused.json()["error"]["details"]
    assert detail["field"] == "body.url" and says in detail["message"], detail
    webhook = (await client.post("/api/webhooks", headers=alice.headers, json={
        "url": "https://hooks.example.com/x", "event_types": ["task.created"]})).json()["data"]
    changed = await client.patch(f"/api/webhooks/{webhook['id']}", headers=alice.headers,
                                 json={"url": url})
    assert changed.status_code == 422 and says in changed.text  # and when changed to it


async def test_a_public_address_or_name_is_accepted(client: httpx.AsyncClient,
                                                    alice: User) -> None:
    for url in ("https://93.184.215.14/hook", "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/",
                "https://hooks.example.com:8443/a?b=c"):
        created = await client.post("/api/webhooks", headers=alice.headers,
                                    json={"url": url, "event_types": ["task.created"]})
        assert created.status_code == 201, (url, created.text)


def claim_for(url: str) -> Claim:
    return Claim(id=uuid.uuid4(), attempt=1, body=b"{}", retry_since=None,  # type: ignore[arg-type]
                 created_at=None, url=url, secrets=["whsec_" + "A" * 32],  # type: ignore[arg-type]
                 subscription_id=uuid.uuid4())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


async def test_a_name_resolving_to_loopback_at_delivery_is_refused(receiver: Receiver) -> None:
    """The system resolver: `localhost` is 127.0.0.1 here (refused at registration, so this
    is what a name that passed registration and now resolves to loopback meets)."""
    port = httpx.URL(receiver.url).port
    sender = Sender(timeout_seconds=5, allow_private=False)
    try:
        answer = await sender.send(claim_for(f"http://localhost:{port}/hook"))
    finally:
        await sender.close()
    assert answer.status_code is None and answer.error is not None
    assert "refused: localhost resolves to 127.0.0.1 is a loopback address" in answer.error
    assert receiver.ids() == []  # never reached


async def test_dns_rebinding_is_refused_on_the_address_connected_to(receiver: Receiver) -> None:
    """A name that answered a public address at registration and answers 127.0.0.1 now (a
    rebinding DNS server, played by the resolver the transport is given): refused, never sent.
    A name whose every address is public goes through to the address checked."""
    port = httpx.URL(receiver.url).port
    answers: dict[str, list[Address]] = {
        "rebind.example": [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("127.0.0.1")],
    }

    async def resolve(host: str, _port: int) -> list[Address]:
        return answers[host]

    transport = GuardedTransport(allow_private=False, resolve=resolve)
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(AddressRefused, match="rebind.example resolves to 127.0.0.1"):
            await http.post(f"http://rebind.example:{port}/hook", content=b"{}")
    assert receiver.ids() == []
    # The same transport, allowed private addresses (development): connects to the address it
    # resolved, with the name as Host.
    answers["rebind.example"] = [ipaddress.ip_address("127.0.0.1")]
    allowed = GuardedTransport(allow_private=True, resolve=resolve)
    async with httpx.AsyncClient(transport=allowed) as http:
        sent = await http.post(f"http://rebind.example:{port}/hook", content=b"{}",
                               headers={"webhook-id": "x"})
    assert sent.status_code == 200
    assert receiver.snapshot()[0].headers["host"] == f"rebind.example:{port}"


async def test_a_redirect_is_not_followed_and_the_delivery_says_so(
    database_url: str, db: asyncpg.Connection, alice: User
) -> None:
    with running_receiver() as target, running_receiver() as redirecting:
        # A 307 to the other receiver: never followed.
        redirecting.answer = lambda r, n: (307, 0, b"")
        redirecting.headers = {"location": target.url}
        app = settings(database_url, webhook_delivery=True, webhook_allow_http=True,
                       webhook_allow_private_addresses=True,
                       webhook_retry_base_seconds=60)
        with running_server(app) as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                hook = (await client.post("/api/webhooks", headers=alice.headers, json={
                    "url": redirecting.url, "event_types": ["task.created"]})).json()["data"]
                await client.post("/api/tasks", headers=alice.headers, json={"title": "t"})
                await eventually(lambda: redirecting.ids(), 30, "the redirecting endpoint called")

                async def listed() -> list[dict[str, object]]:
                    page = await client.get(f"/api/webhooks/{hook['id']}/deliveries",
                                            headers=alice.headers)
                    return page.json()["data"]

                deliveries: list[dict[str, object]] = []
                for _ in range(200):
                    deliveries = await listed()
                    if deliveries and deliveries[0]["last_status_code"] is not None:
                        break
                    await asyncio.sleep(0.1)
                [delivery] = deliveries
                assert delivery["last_status_code"] == 307
                assert delivery["last_error"] == "answered 307: redirects are not followed"
                assert delivery["state"] == "pending" and delivery["next_attempt_at"]
    assert target.ids() == []
