"""The live stream, GET /api/tasks/events, on one server: what it sends first, how it resumes,
heartbeats, the cap on open streams, that a stream is one request to the rate limit, polling
where no listener can run, and refusals before the stream starts (the end on shutdown: tests/platform/test_graceful_shutdown.py).
(Across replicas and through HAProxy: test_live_replicas.py, tests/platform/test_rolling_restart.py;
in a browser: test_live_browser.py.)"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import jwt

from impl.platform.token_verifier import mint_hs256
from impl.tasks.feed_watch import WATCH_SECONDS
from tests.support.factories import User, new_user
from tests.support.live_client import Follower, Message, arrival_of, caught_up_after, messages
from tests.support.servers import SECRET, running_server, settings
from tests.support.task_state import as_stored, tasks_in_database

EVENTS = "/api/tasks/events"
WAIT = 20.0  # a bound for a hang on a busy machine, not a latency claim (those are below)


async def create(client: httpx.AsyncClient, user: User, title: str) -> dict:
    response = await client.post("/api/tasks", json={"title": title}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]


@asynccontextmanager
async def following(base_url: str, user: User, **kwargs: bool) -> AsyncIterator[Follower]:
    follower = Follower(base_url, user.token, **kwargs)
    task = asyncio.create_task(follower.run())
    try:
        yield follower
    finally:
        follower.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def first_messages(response: httpx.Response, count: int) -> list[Message]:
    received = []
    async for message in messages(response):
        received.append(message)
        if len(received) == count:
            return received
    raise AssertionError(f"the stream ended after {received}")


async def test_a_stream_starts_with_everything_then_pushes_each_commit(
    client: httpx.AsyncClient, base_url: str, alice: User, db: asyncpg.Connection
) -> None:
    existing = await create(client, alice, "before the stream")
    async with following(base_url, alice) as follower:
        await follower.wait_for(caught_up_after(existing["id"], 1), WAIT)
        first, up_to_date = follower.received[:2]
        assert [task["id"] for task in first.json()["tasks"]] == [existing["id"]]
        assert up_to_date.event == "up-to-date"
        assert up_to_date.json() == {"sync_token": up_to_date.id} and up_to_date.id == first.id
        # Its id is a sync token: the feed takes it and has nothing newer.
        feed = await client.get("/api/tasks/changes", params={"since": up_to_date.id},
                                headers=alice.headers)
        assert feed.json()["data"] == {"tasks": [], "deleted": [], "reminders_due": []}

        latencies = []
        task = await create(client, alice, "live")
        written = time.monotonic()
        latencies.append(await follower.wait_for(arrival_of(task["id"], 1), WAIT) - written)
        patched = await client.patch(f"/api/tasks/{task['id']}", json={"completed": True},
                                     headers=alice.headers)
        written = time.monotonic()
        latencies.append(await follower.wait_for(arrival_of(task["id"], 2), WAIT) - written)
        await client.delete(f"/api/tasks/{existing['id']}", headers=alice.headers)
        written = time.monotonic()
        latencies.append(await follower.wait_for(arrival_of(existing["id"], None), WAIT) - written)
        assert patched.status_code == 200
        print(f"commit -> event, one server: {[round(s * 1000, 1) for s in latencies]} ms")
        assert max(latencies) < 1.0
        await follower.wait_for(caught_up_after(task["id"], 2), WAIT)
        assert as_stored(follower.tasks) == await tasks_in_database(db, alice.id)


async def test_a_write_by_plain_sql_reaches_an_open_stream_through_the_feed_watch(
    client: httpx.AsyncClient, base_url: str, alice: User, db: asyncpg.Connection
) -> None:
    """A write that does not go through the API (psql, the seed, a migration) sends no wake-up,
    and neither does one whose process died between its commit and its NOTIFY (migration 0010
    took the NOTIFY out of the writing transaction): each replica's feed watch finds it within
    WATCH_SECONDS, plus one poll and one feed read. Without the watch a listening stream would
    not hear of it until the user's next write through the API."""
    existing = await create(client, alice, "before the stream")
    async with following(base_url, alice) as follower:
        await follower.wait_for(caught_up_after(existing["id"], 1), WAIT)
        task_id = uuid.uuid4()
        await db.execute("INSERT INTO tasks (id, user_id, title) VALUES ($1, $2, 'by psql')",
                         task_id, alice.id)
        written = time.monotonic()
        latencies = [await follower.wait_for(arrival_of(str(task_id), 1), WAIT) - written]
        await db.execute("UPDATE tasks SET title = 'edited by psql', version = version + 1, "
                         "change_xid = pg_current_xact_id() WHERE id = $1", task_id)
        written = time.monotonic()
        latencies.append(await follower.wait_for(arrival_of(str(task_id), 2), WAIT) - written)
        await db.execute("DELETE FROM tasks WHERE id = $1", task_id)
        written = time.monotonic()
        latencies.append(await follower.wait_for(arrival_of(str(task_id), None), WAIT) - written)
        print(f"plain SQL commit -> event (feed watch every {WATCH_SECONDS} s): "
              f"{[round(s * 1000) for s in latencies]} ms")
        await follower.wait_for(caught_up_after(existing["id"], 1), WAIT)
        assert as_stored(follower.tasks) == await tasks_in_database(db, alice.id)


async def test_a_reconnect_with_last_event_id_gets_only_what_it_missed(
    client: httpx.AsyncClient, base_url: str, alice: User
) -> None:
    kept = await create(client, alice, "seen before")
    async with following(base_url, alice, reconnect=False) as follower:
        await follower.wait_for(caught_up_after(kept["id"], 1), WAIT)
        last_id = follower.last_event_id
    missed = await create(client, alice, "missed while away")
    await client.delete(f"/api/tasks/{kept['id']}", headers=alice.headers)

    headers = {**alice.headers, "Last-Event-ID": last_id}
    # A `since` too (a client that also stored its first token): Last-Event-ID wins.
    first = (await client.get("/api/tasks/changes", params={"limit": 1},
                              headers=alice.headers)).json()["meta"]["sync_token"]
    async with client.stream("GET", EVENTS, headers=headers, params={"since": first}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        retry, changes, up_to_date = await first_messages(response, 3)
    assert retry.retry == 3000
    assert changes.event == "changes" and up_to_date.event == "up-to-date"
    assert [task["id"] for task in changes.json()["tasks"]] == [missed["id"]]
    assert [gone["id"] for gone in changes.json()["deleted"]] == [kept["id"]]


async def test_bad_or_expired_positions_are_refused_before_the_stream_starts(
    client: httpx.AsyncClient, alice: User, bob: User, database_url: str
) -> None:
    token = (await client.get("/api/tasks/changes", headers=alice.headers)).json()["meta"][
        "sync_token"]
    response = await client.get(EVENTS, headers={**bob.headers, "Last-Event-ID": token})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "header.Last-Event-ID"
    assert (await client.get(EVENTS, params={"since": "not a token"},
                             headers=alice.headers)).status_code == 422
    assert (await client.get(EVENTS)).status_code == 401

    with running_server(settings(database_url, sync_retention_seconds=1)) as short_lived:
        async with httpx.AsyncClient(base_url=short_lived, timeout=30) as other:
            old = (await other.get("/api/tasks/changes", headers=alice.headers)).json()["meta"][
                "sync_token"]
            await asyncio.sleep(1.2)
            response = await other.get(EVENTS, params={"since": old}, headers=alice.headers)
    assert response.status_code == 410
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "SYNC_TOKEN_EXPIRED"


async def test_open_streams_are_capped_per_user_and_released_when_closed(
    database_url: str,
) -> None:
    alice, bob = new_user(), new_user()
    with running_server(settings(database_url, sync_max_streams_per_user=2)) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            async with client.stream("GET", EVENTS, headers=alice.headers) as one, \
                    client.stream("GET", EVENTS, headers=alice.headers) as two:
                assert (one.status_code, two.status_code) == (200, 200)
                await first_messages(one, 2)
                refused = await client.get(EVENTS, headers=alice.headers)
                assert refused.status_code == 429
                assert refused.json()["error"]["code"] == "TOO_MANY_REQUESTS"
                assert "at most 2" in refused.json()["error"]["message"]
                assert int(refused.headers["retry-after"]) > 0
                # The cap is per user.
                async with client.stream("GET", EVENTS, headers=bob.headers) as bobs:
                    assert bobs.status_code == 200
            # Closed streams no longer count (the server notices the disconnect).
            deadline = time.monotonic() + WAIT
            while True:
                async with client.stream("GET", EVENTS, headers=alice.headers) as again:
                    if again.status_code == 200:
                        break
                assert time.monotonic() < deadline, "closed streams still counted"
                await asyncio.sleep(0.1)


async def test_an_idle_stream_sends_heartbeats(database_url: str) -> None:
    alice = new_user()
    with running_server(settings(database_url, sync_heartbeat_seconds=0.2)) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client, \
                client.stream("GET", EVENTS, headers=alice.headers) as response:
            heartbeats, started = 0, time.monotonic()
            async for line in response.aiter_lines():
                heartbeats += line == ": heartbeat"
                if heartbeats == 3:
                    break
                assert time.monotonic() - started < WAIT
    assert heartbeats == 3


async def test_a_stream_is_one_request_to_the_rate_limit(
    database_url: str, db: asyncpg.Connection
) -> None:
    """A burst of five requests and no refill to speak of: the stream takes one, its events
    none (ten of them, from writes that bypass the API), so four requests pass and then 429."""
    alice = new_user()
    limited = settings(database_url, rate_limit_per_second=1 / 600, rate_limit_burst=5)
    with running_server(limited) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client, \
                following(base_url, alice, reconnect=False) as follower:
            await follower.wait_for(lambda received: received, WAIT)
            for n in range(10):
                task_id = await db.fetchval(
                    "INSERT INTO tasks (id, user_id, title) VALUES (gen_random_uuid(), $1, $2) "
                    "RETURNING id::text", alice.id, f"written directly {n}",
                )
                await follower.wait_for(arrival_of(task_id, 1), WAIT)
            assert len([m for m in follower.received if m.event == "changes"]) == 10
            statuses = [(await client.get("/api/tasks/stats", headers=alice.headers)).status_code
                        for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]


async def test_without_a_listener_a_stream_polls(database_url: str) -> None:
    """Behind a transaction pooler with no DATABASE_LISTEN_URL there is no LISTEN: a stream
    reads the feed every SYNC_POLL_SECONDS instead, and still gets every change."""
    alice = new_user()
    polling = settings(database_url, db_statement_cache=False, sync_poll_seconds=0.3)
    polling = polling.model_copy(update={"database_listen_url": None})
    with running_server(polling) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client, \
                following(base_url, alice) as follower:
            await follower.wait_for(lambda received: received, WAIT)
            task = await create(client, alice, "polled")
            written = time.monotonic()
            arrived = await follower.wait_for(arrival_of(task["id"], 1), WAIT)
    print(f"commit -> event, polling every 0.3 s: {(arrived - written) * 1000:.0f} ms")
    assert arrived - written < 0.3 + 1.0


def test_the_stream_is_documented_but_not_an_assistant_tool() -> None:
    from generated.mcp_tools import TOOLS

    assert "list_task_changes" in {tool.name for tool in TOOLS}
    assert "streamTaskEvents" not in {tool.operation_id for tool in TOOLS}


async def test_a_stream_ends_when_its_token_expires(database_url: str) -> None:
    """A stream does not outlive the bearer token that opened it: at its `exp` (no leeway
    here) the stream sends a retry hint and ends; the client comes back with a fresh token."""
    user_id = new_user().id
    short_lived = mint_hs256(SECRET, user_id, ttl_seconds=2)
    strict = settings(database_url, jwt_leeway_seconds=0)
    with running_server(strict) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client, client.stream(
            "GET", EVENTS, headers={"Authorization": f"Bearer {short_lived}"}
        ) as response:
            assert response.status_code == 200
            received = [message async for message in messages(response)]
            ended = time.time()
    expires = jwt.decode(short_lived, options={"verify_signature": False})["exp"]
    assert received[-1].retry == 1000, received
    assert expires - 0.5 <= ended < expires + 5, (expires, ended)


async def test_a_first_catch_up_comes_a_page_at_a_time(
    base_url: str, alice: User, db: asyncpg.Connection
) -> None:
    """A stream opened from nothing by a user with many tasks sends them in pages of 200 as it
    reads them (it never holds them all), then one up-to-date."""
    await db.execute(
        "INSERT INTO tasks (id, user_id, title) "
        "SELECT gen_random_uuid(), $1, 'bulk ' || n FROM generate_series(1, 450) AS n", alice.id,
    )
    async with following(base_url, alice, reconnect=False) as follower:
        await follower.wait_for(
            lambda received: any(m.event == "up-to-date" for m in received), WAIT)
    kinds = [(m.event, len(m.json()["tasks"]) if m.event == "changes" else None)
             for m in follower.received]
    assert kinds == [("changes", 200), ("changes", 200), ("changes", 50), ("up-to-date", None)]
    assert len(follower.tasks) == 450
    assert len({m.id for m in follower.received[:3]}) == 3
