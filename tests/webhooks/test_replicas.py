"""Deliveries across `task-api serve` replicas on one database: a replica killed with SIGKILL
while its attempts are in flight loses nothing (another replica delivers them once their lease
runs out), and two replicas never send the same attempt at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
import pytest

from scripts.local_stack.replicas import Replica
from tests.support.factories import THROUGH_PGBOUNCER, User
from tests.support.servers import POOLED, SECRET, server_environment
from tests.support.webhook_receiver import Receiver, eventually, running_receiver

# The replicas' claims through PgBouncer are covered by test_delivery.py's pass through it;
# starting four servers twice would cost the suite a minute.
pytestmark = pytest.mark.skipif(THROUGH_PGBOUNCER, reason="runs in the direct pass")

WAIT = 240.0  # start-ups, a lease and the deliveries, on a busy shared machine


def replica_env(database_url: str, timeout_seconds: float) -> dict[str, str]:
    """Settings of both replicas; an attempt's lease is `timeout_seconds` plus 2 s."""
    env = {
        **server_environment(database_url), "BETTER_AUTH_SECRET": SECRET, "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_PER_SECOND": "1000000", "RATE_LIMIT_BURST": "1000000",
        "WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true",
        "WEBHOOK_TIMEOUT_SECONDS": str(timeout_seconds), "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT": "8",
    }
    if database_url in POOLED:
        env["DATABASE_LISTEN_URL"] = database_url
    return env


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


async def subscribe_and_write(url: str, user: User, receiver: Receiver, writes: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as api:
        created = await api.post("/api/webhooks", headers=user.headers, json={
            "url": receiver.url, "event_types": ["task.created"]})
        assert created.status_code == 201, created.text
        for n in range(writes):
            answer = await api.post("/api/tasks", headers=user.headers, json={"title": f"t{n}"})
            assert answer.status_code == 201


async def states(db: asyncpg.Connection, user: User) -> Counter[str]:
    rows = await db.fetch("SELECT state FROM webhook_deliveries WHERE user_id = $1", user.id)
    return Counter(row["state"] for row in rows)


async def test_a_replica_killed_during_delivery_loses_nothing(
    database_url: str, db: asyncpg.Connection, alice: User, receiver: Receiver, tmp_path: Path
) -> None:
    # Every answer takes 4 s, so the kill comes while attempts are in flight even on a busy
    # machine; the lease runs out 8 s after a claim.
    receiver.answer = lambda _r, _n: (200, 4.0, b"")
    env = replica_env(database_url, timeout_seconds=6.0)
    first, second = Replica("a", env, tmp_path), Replica("b", env, tmp_path)
    try:
        await asyncio.to_thread(first.start, WAIT)
        await subscribe_and_write(first.url, alice, receiver, 12)
        await eventually(lambda: receiver.ids(), WAIT, "attempts in flight from replica a")
        first.kill()  # SIGKILL: its claimed attempts are never recorded
        in_flight = await db.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE user_id = $1 AND claimed_until "
            "IS NOT NULL", alice.id)
        assert in_flight > 0, "the kill came after every attempt was recorded: nothing shown"
        await asyncio.to_thread(second.start, WAIT)

        async def all_succeeded() -> bool:
            return (await states(db, alice)) == Counter({"succeeded": 12})

        deadline = asyncio.get_running_loop().time() + WAIT
        while not await all_succeeded():
            assert asyncio.get_running_loop().time() < deadline, await states(db, alice)
            await asyncio.sleep(0.2)
    finally:
        for replica in (first, second):
            replica.close()
    assert len(set(receiver.ids())) == 12  # every event arrived (some twice: at least once)


async def test_two_replicas_never_send_one_attempt_twice_at_once(
    database_url: str, db: asyncpg.Connection, alice: User, receiver: Receiver, tmp_path: Path
) -> None:
    # Each event's first attempt fails, its second succeeds: exactly two requests per event
    # when no attempt is ever claimed by both replicas.
    receiver.answer = lambda _r, earlier: (503, 0.1, b"") if earlier == 0 else (204, 0.1, b"")
    # A timeout far above the 0.1 s answers: no attempt times out on a busy machine.
    env = replica_env(database_url, timeout_seconds=20.0)
    replicas = (Replica("a", env, tmp_path), Replica("b", env, tmp_path))
    try:
        with ThreadPoolExecutor(2) as pool:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: list(pool.map(lambda r: r.start(WAIT), replicas)))
        await subscribe_and_write(replicas[0].url, alice, receiver, 20)
        async with httpx.AsyncClient(base_url=replicas[1].url, timeout=30) as api:
            for n in range(20):
                await api.post("/api/tasks", headers=alice.headers, json={"title": f"u{n}"})
        deadline = asyncio.get_running_loop().time() + WAIT
        while (await states(db, alice)) != Counter({"succeeded": 40}):
            assert asyncio.get_running_loop().time() < deadline, await states(db, alice)
            await asyncio.sleep(0.2)
        logs = "".join(replica.log() for replica in replicas)
    finally:
        for replica in replicas:
            replica.close()
    counts = Counter(receiver.ids())
    assert len(counts) == 40 and set(counts.values()) == {2}, counts
    assert receiver.most_at_once_per_id == 1
    assert receiver.most_at_once > 1  # the replicas did send concurrently
    assert "lease was taken over" not in logs
