"""Races: If-Match under concurrent writers, Idempotency-Key under concurrent retries."""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg
import httpx

from tests.support.factories import User


async def test_if_match_lets_exactly_one_concurrent_writer_win(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    created = await client.post("/api/tasks", json={"title": "race"}, headers=alice.headers)
    task_id = created.json()["data"]["id"]
    headers = {**alice.headers, "If-Match": created.headers["etag"]}
    responses = await asyncio.gather(
        *(
            client.patch(f"/api/tasks/{task_id}", json={"title": f"writer {i}"}, headers=headers)
            for i in range(10)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 9
    winner = next(r for r in responses if r.status_code == 200).json()["data"]
    row = await db.fetchrow("SELECT title, version FROM tasks WHERE id = $1", uuid.UUID(task_id))
    assert row["version"] == 2 and row["title"] == winner["title"]


async def test_concurrent_retries_with_one_idempotency_key_create_one_task(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    headers = {**alice.headers, "Idempotency-Key": f"create-{uuid.uuid4()}"}
    body = {"title": "exactly once", "tags": ["a"]}
    responses = await asyncio.gather(
        *(client.post("/api/tasks", json=body, headers=headers) for _ in range(10))
    )
    assert [r.status_code for r in responses] == [201] * 10
    ids = {r.json()["data"]["id"] for r in responses}
    assert len(ids) == 1
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1", alice.id) == 1


async def test_idempotency_key_replay_conflict_and_scope(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    key = {"Idempotency-Key": "same-key"}
    first = await client.post("/api/tasks", json={"title": "t", "priority": "low"}, headers={**alice.headers, **key})
    # Same body, other key order and an explicit default: the same request.
    replay = await client.post(
        "/api/tasks", json={"priority": "low", "completed": False, "title": "t"},
        headers={**alice.headers, **key},
    )
    assert first.status_code == replay.status_code == 201
    assert replay.json()["data"]["id"] == first.json()["data"]["id"]
    assert replay.headers["location"] == first.headers["location"]
    other = await client.post("/api/tasks", json={"title": "different"}, headers={**alice.headers, **key})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "CONFLICT"
    # Keys are scoped per user: bob's same key is his own.
    bobs = await client.post("/api/tasks", json={"title": "t", "priority": "low"}, headers={**bob.headers, **key})
    assert bobs.status_code == 201 and bobs.json()["data"]["id"] != first.json()["data"]["id"]
    assert bobs.json()["data"]["user_id"] == str(bob.id)


async def test_idempotency_key_of_a_deleted_task_is_a_conflict(
    client: httpx.AsyncClient, alice: User
) -> None:
    headers = {**alice.headers, "Idempotency-Key": "deleted"}
    first = await client.post("/api/tasks", json={"title": "t"}, headers=headers)
    await client.delete(f"/api/tasks/{first.json()['data']['id']}", headers=alice.headers)
    again = await client.post("/api/tasks", json={"title": "t"}, headers=headers)
    assert again.status_code == 409


async def test_bad_idempotency_keys_are_422(client: httpx.AsyncClient, alice: User) -> None:
    for key in ("has space", "x" * 256):
        response = await client.post(
            "/api/tasks", json={"title": "t"}, headers={**alice.headers, "Idempotency-Key": key}
        )
        assert response.status_code == 422, key
        assert response.json()["error"]["details"][0]["field"] == "header.Idempotency-Key"


async def test_concurrent_writes_to_the_same_tags_keep_exact_counters(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    """Every write of a task updates the counter rows of the user and of each of its tags (a
    trigger, migration 0004). Writers touching the same tags in different orders must neither
    deadlock (a 500) nor lose an update."""
    from tests.support.factories import RECOUNT, RECOUNT_TAGS, RELIST_TAGS, RELIST_WORDS

    rng = random.Random(11)
    tags = ["a", "b", "c", "d", "e"]
    created = await asyncio.gather(
        *(client.post("/api/tasks", json={"title": f"t{i}", "tags": rng.sample(tags, 3)},
                      headers=alice.headers) for i in range(16))
    )
    ids = [r.json()["data"]["id"] for r in created]
    writes = []
    for i in range(64):
        kind = i % 8
        if kind == 7:
            writes.append(client.post("/api/tasks", json={"title": "n", "tags": rng.sample(tags, 4)},
                                      headers=alice.headers))
        elif kind == 6 and ids:
            writes.append(client.delete(f"/api/tasks/{ids.pop()}", headers=alice.headers))
        else:
            body = {"tags": rng.sample(tags, rng.randrange(6)), "completed": rng.random() < 0.5,
                    "priority": rng.choice(["low", "medium", "high"])}
            writes.append(client.patch(f"/api/tasks/{rng.choice(ids)}", json=body,
                                       headers=alice.headers))
    responses = await asyncio.gather(*writes)
    assert {r.status_code for r in responses} <= {200, 201, 204, 404}, [
        r.text for r in responses if r.status_code >= 500
    ]
    assert await db.fetch(RECOUNT) == []
    assert await db.fetch(RECOUNT_TAGS) == []
    assert await db.fetch(RELIST_TAGS) == []
    assert await db.fetch(RELIST_WORDS) == []
