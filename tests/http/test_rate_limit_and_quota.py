"""Abuse controls: a per-user token bucket (429, Retry-After, RateLimit headers) that never slows
other users, a per-address bucket for requests without an accepted token, and a per-user quota
on stored tasks that concurrent creates can exceed only by the creates in flight at once, less
one (migration 0010: the check takes no lock). Real servers over HTTP, real PostgreSQL."""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from impl.http.rate_limit import RateLimiter
from impl.platform.database import connect_options
from impl.tasks.store import QUOTA_INSERT_SQL, insert_args
from tests.support.factories import RECOUNT, RECOUNT_TAGS, User, new_user
from tests.support.servers import running_server, settings

TASKS = "/api/tasks"
RATE, BURST = 5.0, 10
QUOTA = 5
RATE_LIMIT = re.compile(r'^"per-(user|address)";r=(\d+);t=(\d+)$')


# --- the bucket itself, on a clock the test sets ---------------------------------------------


def test_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    limiter = RateLimiter("per-user", rate=2.0, burst=4)
    decisions = [limiter.take("a", now=100.0) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, True, False]
    assert decisions[0].headers == {"RateLimit-Policy": '"per-user";q=4;w=2',
                                    "RateLimit": '"per-user";r=3;t=1'}
    assert decisions[3].headers["RateLimit"] == '"per-user";r=0;t=2'
    assert decisions[4].retry_after == 1
    assert limiter.take("a", now=100.4).allowed is False  # 0.8 token: not yet
    assert limiter.take("a", now=100.5).allowed is True  # 1 token after 0.5 s at 2/s
    assert limiter.take("b", now=100.5).allowed is True  # another key: its own full bucket


def test_idle_buckets_are_dropped_when_the_table_grows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("impl.http.rate_limit.PRUNE_ABOVE", 3)
    limiter = RateLimiter("per-user", rate=1.0, burst=2)
    for key in "abc":
        limiter.take(key, now=0.0)
    limiter.take("d", now=10.0)  # a, b, c are full again by now: forgotten
    assert set(limiter._buckets) == {"d"}
    # A dropped bucket behaves as it would have: full.
    assert [limiter.take("a", now=10.0).allowed for _ in range(3)] == [True, True, False]


def test_busy_callers_do_not_make_every_new_caller_walk_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("impl.http.rate_limit.PRUNE_ABOVE", 3)
    limiter = RateLimiter("per-user", rate=1.0, burst=2)
    for key in "abc":
        limiter.take(key, now=0.0)
    limiter.take("d", now=0.1)  # nobody is full yet: all kept, next pruning at twice the size
    assert set(limiter._buckets) == {"a", "b", "c", "d"}
    assert limiter._prune_at == 6  # twice the 3 the pruning kept


# --- over HTTP --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_api(base_url: str, database_url: str) -> Iterator[str]:
    assert base_url
    app_settings = settings(
        database_url, rate_limit_per_second=RATE, rate_limit_burst=BURST,
        max_tasks_per_user=QUOTA,
    )
    with running_server(app_settings) as url:
        yield url


def assert_rate_headers(response: httpx.Response, scope: str) -> int:
    assert response.headers["ratelimit-policy"] == f'"per-{scope}";q={BURST};w=2'
    match = RATE_LIMIT.match(response.headers["ratelimit"])
    assert match and match.group(1) == scope, response.headers["ratelimit"]
    return int(match.group(2))


async def test_one_users_burst_is_cut_at_the_limit_and_others_are_not_slowed(
    limited_api: str,
) -> None:
    alice, bob = new_user(), new_user()
    async with httpx.AsyncClient(base_url=limited_api, timeout=30) as http:
        burst = await asyncio.gather(
            *(http.get(TASKS, headers=alice.headers) for _ in range(BURST + 15))
        )
        statuses = Counter(response.status_code for response in burst)
        # The bucket holds BURST; a few more may refill while the burst is served.
        assert BURST <= statuses[200] <= BURST + 3, statuses
        assert statuses[200] + statuses[429] == BURST + 15, statuses
        refused = next(response for response in burst if response.status_code == 429)
        body = refused.json()
        assert body["error"]["code"] == "TOO_MANY_REQUESTS"
        assert body["meta"]["request_id"] == refused.headers["x-request-id"]
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 2
        assert assert_rate_headers(refused, "user") == 0

        # Bob, at the same moment, has his own bucket.
        for response in await asyncio.gather(
            *(http.get(TASKS, headers=bob.headers) for _ in range(BURST))
        ):
            assert response.status_code == 200, response.text
            assert_rate_headers(response, "user")

        await asyncio.sleep(retry_after)
        again = await http.get(TASKS, headers=alice.headers)
        assert again.status_code == 200, again.text


async def test_remaining_counts_down_on_every_answer(limited_api: str) -> None:
    user = new_user()
    async with httpx.AsyncClient(base_url=limited_api, timeout=30) as http:
        created = await http.post(TASKS, json={"title": "t"}, headers=user.headers)
        between = time.monotonic()
        missing = await http.get(f"{TASKS}/{uuid.uuid4()}", headers=user.headers)
        refill = math.ceil((time.monotonic() - between) * RATE)  # at most this many came back
    assert created.status_code == 201 and missing.status_code == 404
    # One token taken by the second answer, less what refilled meanwhile (none when the two are
    # within 1/RATE s; on a busy machine they may be further apart).
    assert assert_rate_headers(missing, "user") <= assert_rate_headers(created, "user") - 1 + refill


async def test_guessing_tokens_is_limited_per_address(limited_api: str) -> None:
    async with httpx.AsyncClient(base_url=limited_api, timeout=30) as http:
        answers = [
            await http.get(TASKS, headers={"Authorization": f"Bearer guess-{n}"})
            for n in range(BURST + 3)
        ]
        statuses = [response.status_code for response in answers]
        assert statuses[:BURST] == [401] * BURST, statuses
        assert 429 in statuses[BURST:], statuses
        limited = answers[statuses.index(429)]
        assert limited.json()["error"]["code"] == "TOO_MANY_REQUESTS"
        assert_rate_headers(limited, "address")
        # A valid token is counted per user, not per address: it still goes through.
        user = new_user()
        assert (await http.get(TASKS, headers=user.headers)).status_code == 200


async def test_public_probes_are_not_limited(limited_api: str) -> None:
    async with httpx.AsyncClient(base_url=limited_api, timeout=30) as http:
        for _ in range(BURST + 5):
            response = await http.get("/api/health")
            assert response.status_code == 200
            assert "ratelimit" not in response.headers


# --- the quota ----------------------------------------------------------------------------------


async def _stored(db: asyncpg.Connection, user: User) -> tuple[int, int]:
    rows = await db.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1", user.id)
    counted = await db.fetchval("SELECT sum(total) FROM task_counts WHERE user_id = $1", user.id)
    return rows, counted


async def test_quota_refuses_the_task_over_it_and_frees_up_on_delete(
    limited_api: str, db: asyncpg.Connection
) -> None:
    user = new_user()
    async with httpx.AsyncClient(base_url=limited_api, timeout=30) as http:
        created = [
            await http.post(TASKS, json={"title": f"t{n}"}, headers=user.headers)
            for n in range(QUOTA)
        ]
        assert [response.status_code for response in created] == [201] * QUOTA
        over = await http.post(TASKS, json={"title": "one too many"}, headers=user.headers)
        assert over.status_code == 409, over.text
        assert over.json()["error"] == {
            "code": "QUOTA_EXCEEDED",
            "message": f"Task quota reached: at most {QUOTA} tasks per user; "
                       "delete some to create more",
        }
        assert await _stored(db, user) == (QUOTA, QUOTA)
        first = created[0].json()["data"]["id"]
        assert (await http.delete(f"{TASKS}/{first}", headers=user.headers)).status_code == 204
        again = await http.post(TASKS, json={"title": "fits again"}, headers=user.headers)
        assert again.status_code == 201, again.text
    assert await _stored(db, user) == (QUOTA, QUOTA)


async def test_concurrent_creates_admit_at_least_the_quota_and_count_every_task(
    limited_api: str, db: asyncpg.Connection
) -> None:
    """A burst of creates: none is refused while the committed count is under the quota (so at
    least QUOTA succeed), each refusal is a 409, and the counters equal the rows (how far over the
    quota a burst may go, and that the next create is refused: the test below)."""
    user = new_user()
    async with httpx.AsyncClient(base_url=limited_api, timeout=30) as http:
        answers = await asyncio.gather(
            *(http.post(TASKS, json={"title": f"race {n}"}, headers=user.headers)
              for n in range(BURST))
        )
        statuses = Counter(response.status_code for response in answers)
        assert set(statuses) <= {201, 409}, statuses
        created = statuses[201]
        assert QUOTA <= created <= BURST, statuses
    assert await _stored(db, user) == (created, created)


async def test_the_quota_is_overshot_by_at_most_the_creates_in_flight_less_one(
    database_url: str,
) -> None:
    """The worst case, made on purpose with the store's own statement: IN_FLIGHT creates of a
    user at QUOTA - 1 tasks, each in a transaction that has not committed yet, so none sees the
    others. All pass (QUOTA - 1 + IN_FLIGHT tasks: over by IN_FLIGHT - 1, the bound the docs
    state); a create that starts after they committed is refused, and the counters are exact."""
    in_flight = 4
    user = new_user().id
    fields = {"title": "t", "description": None, "completed": False, "priority": "medium",
              "due_date": None, "tags": ["quota"], "recurrence": None, "time_zone": None,
              "reminders": "[]"}  # jsonb as text: these connections have no codec for it
    dsn = connect_options(database_url).dsn
    admin = await asyncpg.connect(dsn)
    connections, writers, slots = [admin], [], set()
    # Writers on different counter slots (migration 0010: the session's process id modulo 16):
    # two uncommitted writes in one slot would wait for each other's row lock.
    while len(writers) < in_flight:
        connection = await asyncpg.connect(dsn)
        connections.append(connection)
        slot = await connection.fetchval("SELECT pg_backend_pid() % 16")
        if slot not in slots:
            slots.add(slot)
            writers.append(connection)
    try:
        for _ in range(QUOTA - 1):
            assert await admin.fetchrow(
                QUOTA_INSERT_SQL, *insert_args(uuid.uuid4(), user, fields), QUOTA) is not None
        transactions = [writer.transaction() for writer in writers]
        for transaction in transactions:
            await transaction.start()
        passed = [await writer.fetchrow(QUOTA_INSERT_SQL,
                                        *insert_args(uuid.uuid4(), user, fields), QUOTA)
                  for writer in writers]
        assert all(row is not None for row in passed)
        for transaction in transactions:
            await transaction.commit()
        assert await admin.fetchrow(
            QUOTA_INSERT_SQL, *insert_args(uuid.uuid4(), user, fields), QUOTA) is None
        rows = await admin.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1", user)
        assert rows == QUOTA - 1 + in_flight
        assert await admin.fetchval(
            "SELECT sum(total) FROM task_counts WHERE user_id = $1", user) == rows
        assert await admin.fetch(RECOUNT) == []
        assert await admin.fetch(RECOUNT_TAGS) == []
    finally:
        for connection in connections:
            await connection.close()



async def test_idempotent_replays_still_answer_at_the_quota(
    limited_api: str, db: asyncpg.Connection
) -> None:
    user = new_user()
    async with httpx.AsyncClient(base_url=limited_api, timeout=30) as http:
        keyed = {**user.headers, "Idempotency-Key": "k-1"}
        first = await http.post(TASKS, json={"title": "keyed"}, headers=keyed)
        for n in range(QUOTA - 1):
            assert (await http.post(TASKS, json={"title": f"t{n}"}, headers=user.headers)
                    ).status_code == 201
        replay = await http.post(TASKS, json={"title": "keyed"}, headers=keyed)
        assert replay.status_code == 201, replay.text
        assert replay.json()["data"] == first.json()["data"]
        # A new key over the quota: refused, and the key is not kept, so the same key works
        # once there is room.
        fresh = {**user.headers, "Idempotency-Key": "k-2"}
        assert (await http.post(TASKS, json={"title": "new"}, headers=fresh)).status_code == 409
        assert await db.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE user_id = $1 AND key = 'k-2'", user.id
        ) == 0
        task = first.json()["data"]["id"]
        assert (await http.delete(f"{TASKS}/{task}", headers=user.headers)).status_code == 204
        later = await http.post(TASKS, json={"title": "new"}, headers=fresh)
        assert later.status_code == 201, later.text
