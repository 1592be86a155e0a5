"""Deliveries end to end: a real server (its worker), real PostgreSQL, a real receiver over HTTP,
signatures verified by the official `standardwebhooks` package. Retries are fast here
(WEBHOOK_RETRY_BASE_SECONDS 0.2, a 1 s timeout) so failing and coming back takes seconds."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator

import asyncpg
import httpx
import pytest
from standardwebhooks import Webhook

from impl.webhooks.outbox import record_event
from tests.support.factories import User
from tests.support.servers import running_server, settings
from tests.support.webhook_receiver import (
    Received,
    Receiver,
    eventually,
    eventually_async,
    running_receiver,
)

TIMEOUT_SECONDS = 1.0
CAP = 2
WAIT = 120.0  # generous: the machine is shared
TASK_EVENTS = ["task.created", "task.updated", "task.completed", "task.deleted"]


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[str]:
    app = settings(database_url, webhook_delivery=True, webhook_allow_http=True,
                   webhook_allow_private_addresses=True,
                   webhook_timeout_seconds=TIMEOUT_SECONDS, webhook_retry_base_seconds=0.2,
                   webhook_max_in_flight_per_endpoint=CAP)
    with running_server(app) as base_url:
        yield base_url


@pytest.fixture
async def api(server: str) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        yield http  # type: ignore[misc]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


async def subscribe(api: httpx.AsyncClient, user: User, url: str,
                    types: list[str] | None = None) -> dict[str, object]:
    created = await api.post("/api/webhooks", headers=user.headers,
                             json={"url": url, "event_types": types or TASK_EVENTS})
    assert created.status_code == 201, created.text
    data: dict[str, object] = created.json()["data"]
    return data


def verified(received: Received, secret: str) -> dict[str, object]:
    payload: dict[str, object] = Webhook(secret).verify(received.body, received.headers)
    return payload


async def deliveries(api: httpx.AsyncClient, user: User, hook: dict[str, object]
                     ) -> list[dict[str, object]]:
    listed = await api.get(f"/api/webhooks/{hook['id']}/deliveries", headers=user.headers,
                           params={"limit": 100})
    assert listed.status_code == 200, listed.text
    data: list[dict[str, object]] = listed.json()["data"]
    return data


async def test_every_task_event_arrives_signed(api: httpx.AsyncClient, receiver: Receiver,
                                               alice: User) -> None:
    hook = await subscribe(api, alice, receiver.url)
    task = (await api.post("/api/tasks", headers=alice.headers, json={"title": "a"})).json()["data"]
    path = f"/api/tasks/{task['id']}"
    await api.patch(path, headers=alice.headers, json={"title": "b"})
    await api.patch(path, headers=alice.headers, json={"completed": True})
    await api.delete(path, headers=alice.headers)
    await eventually(lambda: len(receiver.ids()) >= 4, WAIT, "four events")
    payloads = [verified(r, str(hook["secret"])) for r in receiver.snapshot()]
    by_type = {p["type"]: p["data"] for p in payloads}
    assert sorted(by_type) == sorted(TASK_EVENTS)  # per-endpoint order is not promised
    assert by_type["task.created"]["title"] == "a" and by_type["task.created"]["version"] == 1
    assert by_type["task.updated"]["title"] == "b"
    assert by_type["task.completed"]["completed"] is True
    assert by_type["task.deleted"]["id"] == task["id"]
    assert "search" not in by_type["task.created"] and "change_xid" not in by_type["task.created"]
    for received in receiver.snapshot():
        assert received.headers["content-type"] == "application/json"
        assert received.headers["webhook-signature"].startswith("v1,")
    listed = await deliveries(api, alice, hook)
    assert {d["id"] for d in listed} == set(receiver.ids())


async def test_a_signature_made_with_another_secret_does_not_verify(
    api: httpx.AsyncClient, receiver: Receiver, alice: User
) -> None:
    await subscribe(api, alice, receiver.url, ["task.created"])
    await api.post("/api/tasks", headers=alice.headers, json={"title": "a"})
    await eventually(lambda: receiver.ids(), WAIT, "the event")
    with pytest.raises(Exception, match="No matching signature"):
        Webhook("whsec_" + "A" * 32).verify(receiver.snapshot()[0].body,
                                            receiver.snapshot()[0].headers)


async def test_an_event_is_delivered_if_and_only_if_its_change_committed(
    api: httpx.AsyncClient, receiver: Receiver, db: asyncpg.Connection, alice: User
) -> None:
    hook = await subscribe(api, alice, receiver.url, ["task.created", "reminder.due"])
    rolled_back = uuid.uuid4()
    transaction = db.transaction()
    await transaction.start()
    await db.execute("INSERT INTO tasks (id, user_id, title) VALUES ($1, $2, 'gone')",
                     rolled_back, alice.id)
    assert await record_event(db, alice.id, "reminder.due", {"task_id": str(rolled_back)}) == 1
    await transaction.rollback()
    committed = uuid.uuid4()
    async with db.transaction():
        await db.execute("INSERT INTO tasks (id, user_id, title) VALUES ($1, $2, 'kept')",
                         committed, alice.id)
        await record_event(db, alice.id, "reminder.due", {"task_id": str(committed)})
    await eventually(lambda: len(receiver.ids()) >= 2, WAIT, "the committed events")
    payloads = [verified(r, str(hook["secret"])) for r in receiver.snapshot()]
    assert sorted((p["type"], json.dumps(p["data"]).count(str(committed))) for p in payloads) == [
        ("reminder.due", 1), ("task.created", 1)]
    stored = await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE user_id = $1",
                               alice.id)
    assert stored == 2
    assert str(rolled_back) not in "".join(r.body.decode() for r in receiver.snapshot())


async def test_a_receiver_that_fails_times_out_and_comes_back_gets_every_event(
    api: httpx.AsyncClient, receiver: Receiver, alice: User
) -> None:
    def flaky(_received: Received, earlier: int) -> tuple[int, float, bytes]:
        if earlier == 0:
            return 503, 0.0, b"down"
        if earlier == 1:
            return 200, TIMEOUT_SECONDS + 1.0, b"too late"
        return 204, 0.0, b""

    receiver.answer = flaky
    hook = await subscribe(api, alice, receiver.url, ["task.created"])
    for n in range(5):
        await api.post("/api/tasks", headers=alice.headers, json={"title": f"t{n}"})
    listed: list[dict[str, object]] = []

    async def all_delivered() -> bool:
        nonlocal listed
        listed = await deliveries(api, alice, hook)
        return len(listed) == 5 and all(d["state"] == "succeeded" for d in listed)

    await eventually_async(all_delivered, WAIT, "five deliveries succeeded")
    counts = Counter(receiver.ids())
    # Each event: a 503, a timeout, then a 204 (more attempts only if an answer was slowed past
    # the timeout by a busy machine); every attempt of an event carried the same webhook-id.
    assert len(counts) == 5 and min(counts.values()) >= 3, counts
    for delivery in listed:
        assert delivery["attempts"] == counts[str(delivery["id"])] >= 3
        assert delivery["last_status_code"] == 204
        assert delivery["next_attempt_at"] is None and delivery["delivered_at"]
        assert delivery["last_latency_ms"] is not None
    titles = {verified(r, str(hook["secret"]))["data"]["title"] for r in receiver.snapshot()}
    assert titles == {f"t{n}" for n in range(5)}


async def test_410_gone_disables_the_subscription(
    api: httpx.AsyncClient, receiver: Receiver, db: asyncpg.Connection, alice: User
) -> None:
    receiver.answer = lambda _r, _n: (410, 0.0, b"gone")
    hook = await subscribe(api, alice, receiver.url, ["task.created"])
    await api.post("/api/tasks", headers=alice.headers, json={"title": "a"})

    async def disabled() -> bool:
        got = await api.get(f"/api/webhooks/{hook['id']}", headers=alice.headers)
        return got.json()["data"]["enabled"] is False

    await eventually_async(disabled, WAIT, "the subscription disabled")
    got = (await api.get(f"/api/webhooks/{hook['id']}", headers=alice.headers)).json()["data"]
    assert got["disabled_reason"] == "the endpoint answered 410 Gone"
    [delivery] = await deliveries(api, alice, hook)
    assert (delivery["state"], delivery["last_status_code"], delivery["attempts"]) == (
        "failed", 410, 1)
    await api.post("/api/tasks", headers=alice.headers, json={"title": "b"})
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE user_id = $1",
                             alice.id) == 1  # nothing recorded for a disabled subscription
    assert len(receiver.ids()) == 1
    enabled = await api.patch(f"/api/webhooks/{hook['id']}", headers=alice.headers,
                              json={"enabled": True})
    assert enabled.json()["data"]["disabled_reason"] is None


async def test_during_a_rotation_both_secrets_sign(api: httpx.AsyncClient, receiver: Receiver,
                                                   alice: User) -> None:
    hook = await subscribe(api, alice, receiver.url, ["task.created"])
    rotated = (await api.post(f"/api/webhooks/{hook['id']}/rotate-secret",
                              headers=alice.headers)).json()["data"]
    await api.post("/api/tasks", headers=alice.headers, json={"title": "a"})
    await eventually(lambda: receiver.ids(), WAIT, "the event")
    [received] = receiver.snapshot()
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    assert verified(received, str(hook["secret"])) == verified(received, str(rotated["secret"]))


async def test_a_delivery_sent_again_keeps_its_webhook_id(
    api: httpx.AsyncClient, receiver: Receiver, alice: User
) -> None:
    hook = await subscribe(api, alice, receiver.url, ["task.created"])
    await api.post("/api/tasks", headers=alice.headers, json={"title": "a"})
    await eventually(lambda: receiver.ids(), WAIT, "the event")
    [first] = receiver.ids()

    async def succeeded() -> bool:
        return (await deliveries(api, alice, hook))[0]["state"] == "succeeded"

    await eventually_async(succeeded, WAIT, "recorded as succeeded")
    again = await api.post(f"/api/webhooks/{hook['id']}/deliveries/{first}/redeliver",
                           headers=alice.headers)
    assert again.status_code == 202, again.text
    assert again.json()["data"]["state"] == "pending"
    await eventually(lambda: len(receiver.ids()) == 2, WAIT, "sent again")
    assert receiver.ids() == [first, first]
    missing = await api.post(f"/api/webhooks/{hook['id']}/deliveries/{uuid.uuid4()}/redeliver",
                             headers=alice.headers)
    assert missing.status_code == 404


async def test_only_an_excerpt_of_an_answer_is_kept(api: httpx.AsyncClient, receiver: Receiver,
                                                    alice: User) -> None:
    receiver.answer = lambda _r, n: (500, 0.0, b"x" * 100_000) if n == 0 else (200, 0.0, b"")
    hook = await subscribe(api, alice, receiver.url, ["task.created"])
    await api.post("/api/tasks", headers=alice.headers, json={"title": "a"})

    async def failed_once() -> bool:
        listed = await deliveries(api, alice, hook)
        return bool(listed) and listed[0]["attempts"] >= 1 and (
            listed[0]["last_status_code"] is not None)

    await eventually_async(failed_once, WAIT, "the first attempt recorded")
    first = (await deliveries(api, alice, hook))[0]
    if first["last_status_code"] == 500:  # (the retry may already have succeeded)
        assert first["last_response_excerpt"] == "x" * 256
        assert first["last_error"] == "answered 500" and first["next_attempt_at"]


async def test_attempts_in_flight_to_one_endpoint_stay_under_the_cap(
    api: httpx.AsyncClient, receiver: Receiver, db: asyncpg.Connection, alice: User
) -> None:
    receiver.answer = lambda _r, _n: (200, 0.6, b"")  # under the 1 s timeout
    await subscribe(api, alice, receiver.url, ["task.created"])
    # Eight tasks in one transaction: eight deliveries due at once.
    await db.execute("INSERT INTO tasks (id, user_id, title) SELECT gen_random_uuid(), $1, "
                     "'t' || n FROM generate_series(1, 8) AS n", alice.id)
    await eventually(lambda: len(receiver.ids()) >= 8, WAIT, "eight events")
    assert receiver.most_at_once == CAP  # reached, never passed
    assert len(set(receiver.ids())) == 8


async def test_a_due_reminder_arrives_as_reminder_due_and_a_task_as_the_api_returns_it(
    api: httpx.AsyncClient, receiver: Receiver, alice: User
) -> None:
    """`reminder.due` is recorded in the scheduler's claim (the firing transaction) by any
    replica; the data is the change feed's DueReminder. A task event's data has exactly the
    fields the API returns (no internal column)."""
    from datetime import UTC, datetime, timedelta

    from impl.tasks.columns import FIELDS

    hook = await subscribe(api, alice, receiver.url, ["reminder.due", "task.created"])
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    created = await api.post("/api/tasks", headers=alice.headers,
                             json={"title": "call", "reminders": [{"at": soon}]})
    assert created.status_code == 201, created.text
    task = created.json()["data"]
    await eventually(lambda: len(receiver.ids()) >= 2, WAIT, "task.created and reminder.due")
    payloads = {p["type"]: p["data"] for p in
                (verified(r, str(hook["secret"])) for r in receiver.snapshot())}
    assert set(payloads["task.created"]) == set(FIELDS)  # type: ignore[arg-type]
    due = payloads["reminder.due"]
    assert set(due) == {"id", "task_id", "remind_at", "fired_at"}  # type: ignore[arg-type]
    assert due["task_id"] == task["id"]  # type: ignore[index]
    assert datetime.fromisoformat(due["remind_at"]) == datetime.fromisoformat(soon)  # type: ignore[index,arg-type]
