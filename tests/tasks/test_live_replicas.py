"""Live streams across replicas (issue 27, point 4): two `task-api serve` processes on one
database, a stream open on each; every write through one replica must reach the stream on the
other, measured from the write's response to the event's arrival. Three deployments:

- direct: DATABASE_URL is PostgreSQL itself; each replica LISTENs on it. Within 1 s.
- pooler + listen URL: DATABASE_URL goes through PgBouncer in transaction mode (what Neon's
  `-pooler` host is), DATABASE_LISTEN_URL is PostgreSQL directly. Within 1 s.
- pooler only: no listen URL, so no LISTEN at all; streams poll every SYNC_POLL_SECONDS. Every
  change still arrives, within the poll interval plus one read (README's stated bound).

With a listener the poll interval is set to a minute: a stream that was not woken by its
notification would then miss the 1 s bound by far (it would read at its next heartbeat), so
the LISTEN path is what these figures measure. Each deployment ends with both streams' copies
equal, field by field, to PostgreSQL.

Brings its own PgBouncer (and builds each deployment explicitly): the PgBouncer pass skips it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from scripts.local_stack.pgbouncer import PgBouncer, running_pgbouncer
from scripts.local_stack.replicas import Replica
from tests.support.factories import THROUGH_PGBOUNCER, User, new_user
from tests.support.live_client import Follower, arrival_of, caught_up_after
from tests.support.reporting import show
from tests.support.servers import SECRET
from tests.support.task_state import as_stored, tasks_in_database

pytestmark = pytest.mark.skipif(
    THROUGH_PGBOUNCER, reason="brings its own PgBouncer: runs in the direct pass")

REQUIREMENT_SECONDS = 1.0  # issue 27: a change through A reaches a stream on B within 1 s
POLL_SECONDS = 0.5  # the pooler-only deployment's SYNC_POLL_SECONDS
ONE_READ_SECONDS = 0.5  # what a poll's read may add to the interval, on a busy CI machine
NO_POLL_SECONDS = 60.0  # with a listener: polling could never make the bound
ROUNDS = 2  # each: 4 writes through A seen on B, and 4 through B seen on A
SETUP_TIMEOUT = 60.0  # start-up and first events on 2 shared cores: generous


@dataclass(frozen=True)
class Deployment:
    name: str
    pooled: bool
    listen_url: bool  # DATABASE_LISTEN_URL set to the direct URL
    bound_seconds: float


DEPLOYMENTS = [
    Deployment("direct", pooled=False, listen_url=False, bound_seconds=REQUIREMENT_SECONDS),
    Deployment("pooler+listen-url", pooled=True, listen_url=True,
               bound_seconds=REQUIREMENT_SECONDS),
    Deployment("pooler-only", pooled=True, listen_url=False,
               bound_seconds=POLL_SECONDS + ONE_READ_SECONDS),
]


@dataclass
class Pair:
    deployment: Deployment
    replicas: tuple[Replica, Replica]


@pytest.fixture(scope="module")
def bouncer(database_url: str) -> Iterator[PgBouncer]:
    with running_pgbouncer(database_url) as running:
        yield running


@pytest.fixture(scope="module", params=DEPLOYMENTS, ids=lambda d: d.name)
def pair(request: pytest.FixtureRequest, database_url: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    deployment: Deployment = request.param
    env = {
        "DATABASE_URL": database_url, "BETTER_AUTH_SECRET": SECRET, "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_PER_SECOND": "1000000", "RATE_LIMIT_BURST": "1000000",
        "SYNC_POLL_SECONDS": str(POLL_SECONDS if not deployment.listen_url and
                                 deployment.pooled else NO_POLL_SECONDS),
    }
    if deployment.pooled:
        bouncer: PgBouncer = request.getfixturevalue("bouncer")
        env.update(DATABASE_URL=bouncer.url, DB_STATEMENT_CACHE="false")
    if deployment.listen_url:
        env["DATABASE_LISTEN_URL"] = database_url
    directory: Path = tmp_path_factory.mktemp(deployment.name)
    replicas = (Replica("a", env, directory), Replica("b", env, directory))
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda replica: replica.start(SETUP_TIMEOUT), replicas))
        yield Pair(deployment, replicas)
    finally:
        for replica in replicas:
            replica.close()


async def write(http: httpx.AsyncClient, user: User, method: str, url: str,
                body: dict[str, object] | None = None) -> tuple[dict[str, object] | None, float]:
    """One write; (the task it answered with, when its response had arrived)."""
    response = await http.request(method, url, json=body, headers=user.headers)
    assert response.status_code in (200, 201, 204), response.text
    return (response.json()["data"] if response.content else None), time.monotonic()


async def test_a_write_through_one_replica_reaches_a_stream_on_the_other_in_time(
    pair: Pair, db: asyncpg.Connection, request: pytest.FixtureRequest
) -> None:
    deployment, (a, b) = pair.deployment, pair.replicas
    user = new_user()
    followers = {a.name: Follower(a.url, user.token, reconnect=False),
                 b.name: Follower(b.url, user.token, reconnect=False)}
    running = [asyncio.create_task(follower.run()) for follower in followers.values()]
    latencies: list[tuple[str, float]] = []
    try:
        for follower in followers.values():  # each stream open and caught up (nothing yet)
            await follower.wait_for(lambda got: got, SETUP_TIMEOUT)
        async with httpx.AsyncClient(timeout=30) as http:
            # Not measured: each replica's listener connects in the background at start-up
            # (until then a stream reads at its heartbeat, or when the listener connects).
            for writer, other in ((a, b), (b, a)):
                task, _ = await write(http, user, "POST", f"{writer.url}/api/tasks",
                                      {"title": f"warm-up via {writer.name}"})
                assert task is not None
                await followers[other.name].wait_for(
                    arrival_of(str(task["id"]), 1), SETUP_TIMEOUT)

            async def seen(writer: Replica, other: Replica, kind: str, task_id: str,
                           version: int | None, written_at: float) -> None:
                arrived = await followers[other.name].wait_for(
                    arrival_of(task_id, version), SETUP_TIMEOUT)
                latencies.append((f"{kind} {writer.name}->{other.name}", arrived - written_at))

            last: tuple[str, int | None] = ("", None)  # the last write of all
            for n in range(ROUNDS):
                for writer, other in ((a, b), (b, a)):
                    tasks = f"{writer.url}/api/tasks"
                    x, at = await write(http, user, "POST", tasks, {"title": f"x{n}"})
                    assert x is not None
                    x_id = str(x["id"])
                    await seen(writer, other, "create", x_id, 1, at)
                    x, at = await write(http, user, "PATCH", f"{tasks}/{x_id}",
                                        {"title": f"x{n} done", "completed": True})
                    assert x is not None
                    await seen(writer, other, "patch", x_id, int(str(x["version"])), at)
                    y, at = await write(http, user, "POST", tasks, {"title": f"y{n}",
                                                                     "tags": ["kept"]})
                    assert y is not None
                    await seen(writer, other, "create", str(y["id"]), 1, at)
                    _, at = await write(http, user, "DELETE", f"{tasks}/{x_id}")
                    await seen(writer, other, "delete", x_id, None, at)
                    last = (x_id, None)
        # Both copies complete after the last write, the delete of an x, and its round's
        # up-to-date: as stored. (Waiting for the last create instead, as this test once did,
        # raced that delete on the writer's own stream, which no seen() waits for.)
        for follower in followers.values():
            await follower.wait_for(caught_up_after(*last), SETUP_TIMEOUT)
        stored = await tasks_in_database(db, user.id)
        copies = {name: as_stored(follower.tasks) for name, follower in followers.items()}
    finally:
        for follower in followers.values():
            follower.stop()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    figures = sorted(latency for _, latency in latencies)
    show(request, (
        f"[live across replicas: {deployment.name}] {len(figures)} writes, event after the "
        f"write's response: median {statistics.median(figures) * 1000:.0f} ms, "
        f"max {figures[-1] * 1000:.0f} ms (bound {deployment.bound_seconds * 1000:.0f} ms)"))
    late = [(what, round(latency, 3)) for what, latency in latencies
            if latency >= deployment.bound_seconds]
    assert not late, late
    assert len(stored) == 2 * ROUNDS + 2  # the y tasks and the warm-ups
    for name, copy in copies.items():
        assert copy == stored, f"stream on {name} differs from PostgreSQL"
    for replica in (a, b):
        log = replica.log()
        assert "Traceback" not in log, log[-3000:]
        # The deployment is what it claims: only the pooler-only replicas poll.
        polls = "live streams poll every" in log
        assert polls == (deployment.pooled and not deployment.listen_url), log[-3000:]
