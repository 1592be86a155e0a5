"""Webhook delivery outcomes in the Prometheus metrics of a real `task-api serve` (METRICS_PORT),
against real receivers over HTTP: a 2xx is `delivered` (and its lag observed), a 410 a `failed`
4xx attempt and a delivery given up as `gone`, an endpoint that keeps answering 503 `failed`
5xx attempts until the delivery is given up as `retries_exhausted`; a stored URL whose name
resolves to loopback when it is called is `refused` by the address guard, never sent.

Each on a database of its own: every replica's worker claims any user's deliveries, so on the
shared one another test's server could deliver these first."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import httpx

from impl.platform.database import connect_options
from impl.platform.migrate import upgrade
from impl.platform.token_verifier import mint_hs256
from tests.platform.test_metrics import wait_for
from tests.support.metrics import Scrape
from tests.support.servers import SECRET, free_port, server_environment, task_api_serve
from tests.support.webhook_receiver import running_receiver

ATTEMPTS = "task_api_webhook_attempts_total"
GIVEN_UP = "task_api_webhook_deliveries_given_up_total"


def serving(database_url: str, metrics_port: int, allow_private: bool) -> dict[str, str]:
    return {
        **server_environment(database_url),
        "BETTER_AUTH_SECRET": SECRET,
        "METRICS_PORT": str(metrics_port),
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true" if allow_private else "false",
        "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        "WEBHOOK_RETRY_FOR_SECONDS": "2",
        "WEBHOOK_TIMEOUT_SECONDS": "5",
        "LOG_LEVEL": "WARNING",
    }


def subscribe(http: httpx.Client, bearer: dict[str, str], url: str) -> None:
    created = http.post("/api/webhooks", headers=bearer,
                        json={"url": url, "event_types": ["task.created"]})
    assert created.status_code == 201, created.text


async def test_delivered_failed_and_given_up_are_counted(fresh_database: str,
                                                         tmp_path: Path) -> None:
    await asyncio.to_thread(upgrade, fresh_database)
    metrics_port = free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    bearer = {"Authorization": f"Bearer {mint_hs256(SECRET, str(uuid.uuid4()))}"}
    env = serving(fresh_database, metrics_port, allow_private=True)
    with running_receiver() as ok, running_receiver(lambda r, n: (410, 0, b"gone")) as gone, \
            running_receiver(lambda r, n: (503, 0, b"busy")) as busy, \
            task_api_serve(env, tmp_path / "server.log", workers=1) as (base_url, _process), \
            httpx.Client(base_url=base_url, timeout=30) as http:
        for receiver in (ok, gone, busy):
            subscribe(http, bearer, receiver.url)
        created = http.post("/api/tasks", json={"title": "hooked"}, headers=bearer)
        assert created.status_code == 201, created.text

        def settled(now: Scrape) -> bool:
            return (now.value(GIVEN_UP, reason="retries_exhausted") == 1
                    and now.value(ATTEMPTS, outcome="delivered") == 1
                    and now.value(GIVEN_UP, reason="gone") == 1)

        after = await asyncio.to_thread(wait_for, metrics_url, settled)
        busy_calls = len(busy.ids())

    assert len(ok.ids()) == 1 and len(gone.ids()) == 1 and busy_calls >= 2
    assert after.value(ATTEMPTS, outcome="delivered", status_class="2xx") == 1
    assert after.value(ATTEMPTS, outcome="failed", status_class="4xx") == 1
    assert after.value(ATTEMPTS, outcome="failed", status_class="5xx") == busy_calls
    assert after.value(ATTEMPTS, outcome="refused") == 0
    assert after.value("task_api_webhook_attempt_duration_seconds_count",
                       outcome="failed") == 1 + busy_calls
    assert after.value("task_api_webhook_delivery_lag_seconds_count") == 1
    assert 0 <= after.value("task_api_webhook_delivery_lag_seconds_sum") < 30


async def test_an_address_refused_at_delivery_is_counted(fresh_database: str,
                                                          tmp_path: Path) -> None:
    """The default policy (no private addresses): the subscription's URL, accepted as a public
    name, is changed in the database to a name that resolves to loopback (as a DNS answer
    could change): the guard refuses it when it is called."""
    await asyncio.to_thread(upgrade, fresh_database)
    metrics_port = free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    bearer = {"Authorization": f"Bearer {mint_hs256(SECRET, str(uuid.uuid4()))}"}
    env = serving(fresh_database, metrics_port, allow_private=False)
    with running_receiver() as receiver, \
            task_api_serve(env, tmp_path / "server.log", workers=1) as (base_url, _process), \
            httpx.Client(base_url=base_url, timeout=30) as http:
        subscribe(http, bearer, "http://hooks.example.com/hook")
        port = httpx.URL(receiver.url).port
        connection = await asyncpg.connect(connect_options(fresh_database).dsn)
        try:
            await connection.execute("UPDATE webhook_subscriptions SET url = $1",
                                     f"http://localhost:{port}/hook")
        finally:
            await connection.close()
        created = http.post("/api/tasks", json={"title": "hooked"}, headers=bearer)
        assert created.status_code == 201, created.text
        after = await asyncio.to_thread(
            wait_for, metrics_url, lambda now: now.value(ATTEMPTS, outcome="refused") >= 1)
        assert receiver.ids() == []  # never reached
    assert after.value(ATTEMPTS, outcome="refused", status_class="none") >= 1
    assert after.value(ATTEMPTS, outcome="delivered") == 0
