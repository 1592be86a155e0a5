"""The Prometheus metrics of a real `task-api serve --workers 2` (prometheus_client's multiprocess
mode), scraped from METRICS_PORT and parsed with prometheus_client's own parser: every request
the test sends is counted once, under its operationId and status class, whichever worker took
it; refused tokens by reason, rate-limit and quota refusals match the 401s, 429s and 409 the
client saw; the
pool gauges add both workers up; the API's own port does not serve the metrics."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from impl.platform.token_verifier import mint_hs256
from tests.support.metrics import Scrape, scrape
from tests.support.servers import (
    SECRET,
    TASK_API,
    free_port,
    server_environment,
    task_api_serve,
)

POOL_MAX = 3
BURST = 10  # per worker: a limited user's first requests pass on each worker
TESTED_OPERATIONS = ("createTask", "listTasks", "unmatched", "getTaskStats")


def fresh(base_url: str) -> httpx.Client:
    """A client whose every request opens a connection of its own, so the kernel spreads them
    over both workers."""
    return httpx.Client(base_url=base_url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def wait_for(url: str, check: Callable[[Scrape], bool], timeout: float = 30) -> Scrape:
    """Scrapes until `check(scrape)` holds (every worker publishes once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        last = scrape(url)
        if check(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never satisfied the check:\n{last.text[-4000:]}")
        time.sleep(0.3)


def test_two_workers_count_every_request_once_by_operation(
    database_url: str, tmp_path: Path
) -> None:
    metrics_port = free_port()
    env = {
        **server_environment(database_url),
        "BETTER_AUTH_SECRET": SECRET,
        "METRICS_PORT": str(metrics_port),
        "DB_POOL_MAX_SIZE": str(POOL_MAX),
        "DB_POOL_MIN_SIZE": "1",
        "RATE_LIMIT_PER_SECOND": "0.01",
        "RATE_LIMIT_BURST": str(BURST),
        "MAX_TASKS_PER_USER": "3",
        "LOG_LEVEL": "WARNING",
    }
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    alice, limited = str(uuid.uuid4()), str(uuid.uuid4())
    bearer = {"Authorization": f"Bearer {mint_hs256(SECRET, alice)}"}
    with task_api_serve(env, tmp_path / "server.log", workers=2) as (base_url, _process), \
            fresh(base_url) as http:
        before = scrape(metrics_url)
        for i in range(3):
            assert http.post("/api/tasks", json={"title": f"t{i}"}, headers=bearer).status_code == 201
        over = http.post("/api/tasks", json={"title": "one too many"}, headers=bearer)
        assert over.status_code == 409 and over.json()["error"]["code"] == "QUOTA_EXCEEDED"
        assert http.get("/api/tasks", headers=bearer).status_code == 200
        # Refused tokens, from one address: within the per-address burst of either worker.
        assert http.get("/api/tasks").status_code == 401
        assert http.get("/api/tasks", headers={"Authorization": "Bearer x.y.z"}).status_code == 401
        for _ in range(2):
            foreign = mint_hs256("another-secret-" + "y" * 40, alice)
            answer = http.get("/api/tasks", headers={"Authorization": f"Bearer {foreign}"})
            assert answer.status_code == 401
        expired = mint_hs256(SECRET, alice, -3600)
        assert http.get("/api/tasks", headers={"Authorization": f"Bearer {expired}"}).status_code == 401
        # No route: the metrics are not on the API's port; an unknown path.
        assert http.get("/metrics").status_code == 404
        assert http.get("/api/nothing-here").status_code == 404
        # A user over the rate limit: each worker lets BURST through, then 429s.
        limited_bearer = {"Authorization": f"Bearer {mint_hs256(SECRET, limited)}"}
        statuses = [http.get("/api/tasks/stats", headers=limited_bearer).status_code
                    for _ in range(3 * BURST)]
        assert set(statuses) <= {200, 429} and statuses.count(429) >= BURST, statuses

        sent = 3 + 1 + 1 + 5 + 2 + len(statuses)

        def all_published(now: Scrape) -> bool:
            """Each worker publishes what it counted once a second."""
            name = "task_api_http_request_duration_seconds_count"
            published = sum(now.value(name, operation=operation) - before.value(
                name, operation=operation) for operation in TESTED_OPERATIONS)
            # In flight is sampled on its own beat: a request whose count is published may
            # still have been in flight at that worker's last sample (seen once at load 12).
            return (published == sent
                    and now.value("task_api_db_pool_connections_max") == 2 * POOL_MAX
                    and now.value("task_api_http_requests_in_flight") == 0)

        after = wait_for(metrics_url, all_published)

    def counted(operation: str, status_class: str) -> float:
        name = "task_api_http_request_duration_seconds_count"
        return (after.value(name, operation=operation, status_class=status_class)
                - before.value(name, operation=operation, status_class=status_class))

    assert counted("createTask", "2xx") == 3
    assert counted("createTask", "4xx") == 1
    assert counted("listTasks", "2xx") == 1
    assert counted("listTasks", "4xx") == 5
    assert counted("unmatched", "4xx") == 2
    assert counted("getTaskStats", "2xx") == statuses.count(200)
    assert counted("getTaskStats", "4xx") == statuses.count(429)
    # Labels come from the contract, never from raw paths.
    assert not [sample for sample in after.samples
                if any("/" in value for value in sample.labels.values())]
    refused = "task_api_auth_tokens_refused_total"
    assert after.value(refused, reason="missing") == 1
    assert after.value(refused, reason="malformed") == 1
    assert after.value(refused, reason="bad_signature") == 2
    assert after.value(refused, reason="token_expired") == 1
    assert after.value("task_api_refusals_total", kind="per-user") == statuses.count(429)
    assert after.value("task_api_refusals_total", kind="quota") == 1
    # Both workers' gauges add up (DB_POOL_MAX_SIZE each), nothing is in flight any more.
    assert after.value("task_api_http_requests_in_flight") == 0
    assert 1 <= after.value("task_api_db_pool_connections") <= 2 * POOL_MAX
    # DB_POOL_MIN_SIZE=1 of POOL_MAX: the first concurrent needs waited for a new connection.
    assert after.has("task_api_db_pool_wait_seconds_count")
    assert after.value("task_api_open_streams") == 0
    # Each worker wrote its own file: the histogram's sum over workers is what was counted.
    assert after.has("task_api_http_request_duration_seconds_bucket")


def test_metrics_port_refused_when_taken_or_the_api_port(database_url: str, tmp_path: Path
                                                         ) -> None:
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", **server_environment(database_url),
           "BETTER_AUTH_SECRET": SECRET, "METRICS_PORT": str(port)}
    same = subprocess.run([TASK_API, "serve", "--port", str(port)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert same.returncode == 2
    assert "METRICS_PORT is the API's port" in same.stderr


async def test_fired_reminders_and_their_lag_are_counted(
    fresh_database: str, tmp_path: Path
) -> None:
    """On a database of its own (every replica's scheduler fires any user's reminders, so on the
    shared one another server could fire this one first)."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from impl.platform.migrate import upgrade

    await asyncio.to_thread(upgrade, fresh_database)
    metrics_port = free_port()
    env = {**server_environment(fresh_database), "BETTER_AUTH_SECRET": SECRET,
           "METRICS_PORT": str(metrics_port), "LOG_LEVEL": "WARNING"}
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    bearer = {"Authorization": f"Bearer {mint_hs256(SECRET, str(uuid.uuid4()))}"}
    with task_api_serve(env, tmp_path / "server.log", workers=1) as (base_url, _process), \
            fresh(base_url) as http:
        soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()  # once the server is up
        created = http.post("/api/tasks", json={"title": "t", "reminders": [{"at": soon}]},
                            headers=bearer)
        assert created.status_code == 201, created.text
        after = await asyncio.to_thread(
            wait_for, metrics_url, lambda s: s.value("task_api_reminders_fired_total") == 1)
    assert after.value("task_api_reminder_lag_seconds_count") == 1
    assert 0 <= after.value("task_api_reminder_lag_seconds_sum") < 30
