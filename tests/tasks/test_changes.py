"""The change feed, GET /api/tasks/changes: first sync in pages, later syncs with tombstones,
each task at most once and in its latest state, tokens sealed and bound to their user, and the
410 once a token outlives the tombstones."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from impl.platform.database import Database
from impl.tasks.changes import PAGE_SQL, ChangeFeed, _start_key
from impl.tasks.sync_token import SyncPosition, SyncTokenCodec
from tests.support.devices import Device, database_copy, stored
from tests.support.factories import User, new_user
from tests.support.servers import SECRET, running_server, settings


async def create(client: httpx.AsyncClient, user: User, title: str, **fields: object) -> dict:
    response = await client.post("/api/tasks", json={"title": title, **fields}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def changes(client: httpx.AsyncClient, user: User, **params: object) -> httpx.Response:
    return await client.get("/api/tasks/changes", params=params, headers=user.headers)


async def test_a_first_sync_pages_through_every_task_once(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    created = [await create(client, alice, f"task {n}") for n in range(5)]
    gone = await create(client, alice, "deleted before the first sync")
    assert (await client.delete(f"/api/tasks/{gone['id']}", headers=alice.headers)).status_code == 204

    device = Device(alice, limit=2)
    pages = await device.sync(client)
    assert [len(page["tasks"]) for page in pages] == [2, 2, 1]
    assert all(page["deleted"] == [] for page in pages)  # nothing to delete on a first sync
    assert set(device.tasks) == {task["id"] for task in created}
    assert stored(device) == await database_copy(db, alice)


async def test_a_later_sync_returns_what_changed_whole_and_deletions_as_tombstones(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    kept, edited, removed = [await create(client, alice, name) for name in ("kept", "edited", "removed")]
    device = Device(alice)
    await device.sync(client)

    for title in ("edited once", "edited twice"):
        response = await client.patch(
            f"/api/tasks/{edited['id']}", json={"title": title}, headers=alice.headers
        )
        assert response.status_code == 200
    await client.patch(f"/api/tasks/{edited['id']}", json={"completed": True}, headers=alice.headers)
    before_delete = datetime.now(UTC)
    assert (await client.delete(f"/api/tasks/{removed['id']}", headers=alice.headers)).status_code == 204
    new = await create(client, alice, "new")

    (page,) = await device.sync(client)
    # Each changed task once, in its latest state; the untouched one not at all.
    assert sorted(task["id"] for task in page["tasks"]) == sorted([edited["id"], new["id"]])
    latest = next(task for task in page["tasks"] if task["id"] == edited["id"])
    assert (latest["title"], latest["completed"], latest["version"]) == ("edited twice", True, 4)
    (tombstone,) = page["deleted"]
    assert tombstone["id"] == removed["id"]
    deleted_at = datetime.fromisoformat(tombstone["deleted_at"])
    assert before_delete - timedelta(seconds=5) < deleted_at < datetime.now(UTC) + timedelta(seconds=5)
    assert kept["id"] in device.tasks and removed["id"] not in device.tasks
    assert stored(device) == await database_copy(db, alice)

    # Nothing since: an empty page, caught up, and the token still works.
    (page,) = await device.sync(client)
    assert page == {"tasks": [], "deleted": [], "reminders_due": []}


async def test_one_users_feed_never_shows_another_users_changes(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    alices = Device(alice)
    await alices.sync(client)
    bobs_task = await create(client, bob, "bob's")
    await client.delete(f"/api/tasks/{bobs_task['id']}", headers=bob.headers)
    (page,) = await alices.sync(client)
    assert page == {"tasks": [], "deleted": [], "reminders_due": []}


async def test_a_task_written_while_a_device_pages_comes_again_in_its_latest_state(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    """The round being paged is fixed by its first page's snapshot: a task written meanwhile
    leaves it (no page of the round shows it twice or skips another) and comes whole in the
    next round."""
    tasks = [await create(client, alice, f"task {n}") for n in range(6)]
    device = Device(alice, limit=2)
    await device.sync(client)

    for task in tasks:  # every task changes: the next round holds six
        await client.patch(f"/api/tasks/{task['id']}", json={"priority": "low"}, headers=alice.headers)
    first = await changes(client, alice, since=device.token, limit=2)
    page = first.json()
    device.apply(page["data"])
    delivered = {task["id"] for task in page["data"]["tasks"]}
    # Meanwhile one delivered and one undelivered task change again, one is deleted.
    undelivered = [task["id"] for task in tasks if task["id"] not in delivered]
    again = [next(iter(delivered)), undelivered[0]]
    for task_id in again:
        await client.patch(f"/api/tasks/{task_id}", json={"title": "again"}, headers=alice.headers)
    await client.delete(f"/api/tasks/{undelivered[1]}", headers=alice.headers)

    device.token = page["meta"]["sync_token"]
    rest = await device.sync(client)
    seen_in_round: list[str] = []
    for data in rest[:-1] if len(rest) > 1 else []:
        seen_in_round += [task["id"] for task in data["tasks"]]
    assert len(seen_in_round) == len(set(seen_in_round))
    assert stored(device) == await database_copy(db, alice)
    assert all(device.tasks[task_id]["title"] == "again" for task_id in again)


async def test_a_token_is_sealed_and_bound_to_its_user(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    await create(client, alice, "Buy groceries for the party")
    token = (await changes(client, alice)).json()["meta"]["sync_token"]
    assert "groceries" not in token and ":" not in token  # opaque: no title, no snapshot text

    for wrong, user in ((token, bob), (token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), alice),
                        ("bm90LWEtdG9rZW4", alice)):
        response = await changes(client, user, since=wrong)
        assert response.status_code == 422, response.text
        (detail,) = response.json()["error"]["details"]
        assert detail["field"] == "query.since" and detail["type"] == "sync_token_invalid"

    # A list cursor is sealed for another purpose: not a sync token.
    for n in range(3):
        await create(client, alice, f"more {n}")
    cursor = (await client.get("/api/tasks", params={"limit": 1}, headers=alice.headers)).json()[
        "meta"]["next_cursor"]
    assert (await changes(client, alice, since=cursor)).status_code == 422


def _sync_tokens() -> SyncTokenCodec:
    """The codec of the test servers (impl/app.py derives the secret from BETTER_AUTH_SECRET)."""
    return SyncTokenCodec(hashlib.sha256(b"task-api cursor\0" + SECRET.encode()).digest())


async def test_a_token_from_a_reset_database_is_410(client: httpx.AsyncClient, alice: User) -> None:
    """A snapshot from the future (the database was restored or replaced since): start over."""
    future = "99999999999:99999999999:"
    token = _sync_tokens().encode(alice.id, SyncPosition(seen=future, seen_at=datetime.now(UTC)))
    response = await changes(client, alice, since=token)
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "SYNC_TOKEN_EXPIRED"


async def test_a_token_older_than_the_retention_is_410_and_a_fresh_start_works(
    database_url: str,
) -> None:
    alice = new_user()
    with running_server(settings(database_url, sync_retention_seconds=1)) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            await create(client, alice, "kept")
            device = Device(alice)
            await device.sync(client)
            await asyncio.sleep(1.2)  # the token's snapshot is now older than the retention
            response = await changes(client, alice, since=device.token)
            assert response.status_code == 410, response.text
            body = response.json()
            assert body["error"]["code"] == "SYNC_TOKEN_EXPIRED"
            assert "1 s" in body["error"]["message"] and "without a token" in body["error"]["message"]
            assert (await changes(client, alice)).status_code == 200  # starting over works


async def test_the_purge_keeps_tombstones_a_valid_token_needs(database_url: str) -> None:
    user = new_user()
    app_settings = settings(database_url, db_command_timeout_seconds=10)
    database = Database(database_url, app_settings)
    await database.open()
    try:
        feed = ChangeFeed(database, retention_seconds=60)
        ages = {"old": 75, "within the margin": 65, "recent": 30}  # seconds; margin is 11 s
        ids = {name: uuid.uuid4() for name in ages}
        async with database.connection() as connection:
            for name, age in ages.items():
                await connection.execute(
                    "INSERT INTO task_tombstones (user_id, task_id, deleted_at) "
                    "VALUES ($1, $2, now() - make_interval(secs => $3))",
                    user.id, ids[name], float(age),
                )
            assert await feed.purge_tombstones() >= 1
            left = {row["task_id"] for row in await connection.fetch(
                "SELECT task_id FROM task_tombstones WHERE user_id = $1", user.id)}
        assert left == {ids["within the margin"], ids["recent"]}
    finally:
        await database.close()


def _scans(plan: dict, index: str) -> list[dict]:
    found = [plan] if plan.get("Index Name") == index else []
    for child in plan.get("Plans", []):
        found += _scans(child, index)
    return found


async def test_a_later_sync_reads_only_the_changed_tasks_from_the_index(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """A later sync of a user with many tasks reads the few changed ones from the feed's index,
    not every task (the benchmark times it up to 100,000 tasks: docs/perf/sync.md)."""
    user = new_user()
    await db.execute(
        "INSERT INTO tasks (id, user_id, title) "
        "SELECT gen_random_uuid(), $1, 'bulk ' || n FROM generate_series(1, 2000) AS n", user.id,
    )
    device = Device(user, limit=1000)
    await device.sync(client)
    assert len(device.tasks) == 2000 and device.pages == 2
    await create(client, user, "one more")
    assert device.token is not None
    position = _sync_tokens().decode(user.id, device.token)
    after_xid, after_id = _start_key(position)
    plan = await db.fetchval(
        f"EXPLAIN (ANALYZE, FORMAT JSON) {PAGE_SQL}",
        user.id, position.seen, position.target, after_xid, after_id, 201,
    )
    scans = _scans(json.loads(plan)[0]["Plan"], "ix_tasks_user_change")
    assert scans, plan
    assert all(scan["Actual Rows"] <= 1 for scan in scans), plan
    (page,) = await device.sync(client)
    assert [task["title"] for task in page["tasks"]] == ["one more"]


async def test_an_update_that_does_not_stamp_change_xid_is_refused(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    """Every UPDATE must set change_xid (the store's do): the database refuses one that does
    not, so no write, present or future, can slip past the feed."""
    task = await create(client, alice, "stamped")
    with pytest.raises(asyncpg.RaiseError, match="must set change_xid"):
        await db.execute("UPDATE tasks SET title = 'unstamped' WHERE id = $1", uuid.UUID(task["id"]))
    await db.execute(
        "UPDATE tasks SET title = 'stamped again', change_xid = pg_current_xact_id() "
        "WHERE id = $1", uuid.UUID(task["id"]),
    )
    assert await db.fetchval("SELECT title FROM tasks WHERE id = $1", uuid.UUID(task["id"])) == (
        "stamped again")
