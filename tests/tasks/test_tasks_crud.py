"""The seed's user stories, through the HTTP API: create, list, update, delete, get one."""

from __future__ import annotations

import time
import uuid

import asyncpg
import httpx
import jwt

from tests.support.factories import User
from tests.support.servers import SECRET


async def create(client: httpx.AsyncClient, user: User, **fields: object) -> dict:
    response = await client.post("/api/tasks", json={"title": "A task", **fields}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]


# -- Story 1: create ---------------------------------------------------------------------------


async def test_create_returns_201_location_etag_and_defaults(
    client: httpx.AsyncClient, alice: User
) -> None:
    response = await client.post("/api/tasks", json={"title": "Buy milk"}, headers=alice.headers)
    assert response.status_code == 201
    task = response.json()["data"]
    assert response.headers["location"] == f"/api/tasks/{task['id']}"
    assert response.headers["etag"] == '"1"'
    assert task["user_id"] == str(alice.id)
    assert task["title"] == "Buy milk"
    assert task["description"] is None
    assert task["completed"] is False and task["completed_at"] is None
    assert task["priority"] == "medium"
    assert task["due_date"] is None and task["tags"] == [] and task["version"] == 1
    assert task["created_at"].endswith("+00:00") and task["created_at"] == task["updated_at"]


async def test_create_with_every_field(client: httpx.AsyncClient, alice: User) -> None:
    task = await create(
        client, alice, description="2 litres", completed=True, priority="high",
        due_date="2026-12-01T10:00:00+02:00", tags=["home", "shop", "home"],
    )
    assert task["completed"] is True and task["completed_at"] is not None
    assert task["priority"] == "high"
    assert task["due_date"] == "2026-12-01T08:00:00+00:00"
    assert task["tags"] == ["home", "shop"]  # duplicates merged, first occurrence kept


async def test_create_without_header_is_401(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    before = await db.fetchval("SELECT count(*) FROM tasks")
    response = await client.post("/api/tasks", json={"title": "x"})
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "UNAUTHORIZED", "message": "Authorization header required"
    }
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert await db.fetchval("SELECT count(*) FROM tasks") == before


async def test_create_with_expired_token_is_401_token_expired(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    token = jwt.encode({"sub": str(uuid.uuid4()), "exp": now - 3600}, SECRET, algorithm="HS256")
    response = await client.post(
        "/api/tasks", json={"title": "x"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Token expired"


async def test_create_without_title_is_422(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    for body in ({}, {"title": ""}, {"title": "   "}, {"title": "x" * 256}, {"title": None}):
        response = await client.post("/api/tasks", json=body, headers=alice.headers)
        assert response.status_code == 422, body
        error = response.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert [d["field"] for d in error["details"]] == ["body.title"], body
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1", alice.id) == 0


async def test_create_rejects_bad_types_and_bounds(client: httpx.AsyncClient, alice: User) -> None:
    bad = [
        {"title": "x", "priority": "urgent"},
        {"title": "x", "completed": "yes"},
        {"title": "x", "due_date": "tomorrow"},
        {"title": "x", "due_date": "2026-12-01T10:00:00"},  # no offset: not RFC 3339
        {"title": "x", "tags": ["t"] * 11},
        {"title": "x", "tags": ["x" * 33]},
        {"title": "x", "tags": [""]},
        {"title": "x", "description": "d" * 2001},
        {"title": "x", "user_id": str(uuid.uuid4())},
        {"title": "x", "version": 7},
    ]
    for body in bad:
        response = await client.post("/api/tasks", json=body, headers=alice.headers)
        assert response.status_code == 422, (body, response.text)


# -- Story 2: list -----------------------------------------------------------------------------


async def test_list_shows_exactly_the_callers_tasks(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    mine = {(await create(client, alice, title=f"alice {i}"))["id"] for i in range(3)}
    theirs = {(await create(client, bob, title=f"bob {i}"))["id"] for i in range(2)}
    response = await client.get("/api/tasks", headers=alice.headers)
    assert response.status_code == 200
    body = response.json()
    assert {task["id"] for task in body["data"]} == mine
    assert not mine & theirs
    assert body["meta"]["total"] == 3 and body["meta"]["limit"] == 50
    assert body["meta"]["next_cursor"] is None
    assert all(task["user_id"] == str(alice.id) for task in body["data"])


async def test_empty_list_has_total_zero(client: httpx.AsyncClient, alice: User) -> None:
    body = (await client.get("/api/tasks", headers=alice.headers)).json()
    assert body["data"] == [] and body["meta"]["total"] == 0 and body["meta"]["next_cursor"] is None


# -- Story 3: update ---------------------------------------------------------------------------


async def test_patch_own_task(client: httpx.AsyncClient, alice: User) -> None:
    task = await create(client, alice, description="keep me", tags=["a"])
    response = await client.patch(
        f"/api/tasks/{task['id']}", json={"completed": True}, headers=alice.headers
    )
    assert response.status_code == 200
    updated = response.json()["data"]
    assert updated["completed"] is True and updated["completed_at"] is not None
    assert updated["description"] == "keep me" and updated["tags"] == ["a"]
    assert updated["version"] == 2 and response.headers["etag"] == '"2"'
    assert updated["updated_at"] > task["updated_at"]
    # Un-completing clears completed_at; an explicit null clears a nullable field.
    response = await client.patch(
        f"/api/tasks/{task['id']}", json={"completed": False, "description": None},
        headers=alice.headers,
    )
    again = response.json()["data"]
    assert again["completed_at"] is None and again["description"] is None
    assert again["version"] == 3


async def test_completed_at_survives_a_second_completion(client: httpx.AsyncClient, alice: User) -> None:
    task = await create(client, alice, completed=True)
    response = await client.patch(
        f"/api/tasks/{task['id']}", json={"completed": True, "title": "renamed"},
        headers=alice.headers,
    )
    assert response.json()["data"]["completed_at"] == task["completed_at"]


async def test_patch_refuses_null_for_non_nullable_fields(
    client: httpx.AsyncClient, alice: User
) -> None:
    task = await create(client, alice)
    for field in ("title", "completed", "priority", "tags"):
        response = await client.patch(
            f"/api/tasks/{task['id']}", json={field: None}, headers=alice.headers
        )
        assert response.status_code == 422, field
        assert response.json()["error"]["details"][0]["field"] == f"body.{field}"
    current = (await client.get(f"/api/tasks/{task['id']}", headers=alice.headers)).json()["data"]
    assert current["version"] == 1


async def test_patch_others_task_is_403_and_unchanged(
    client: httpx.AsyncClient, alice: User, bob: User, db: asyncpg.Connection
) -> None:
    task = await create(client, alice, title="alice's")
    response = await client.patch(
        f"/api/tasks/{task['id']}", json={"title": "hijacked"}, headers=bob.headers
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"
    row = await db.fetchrow("SELECT title, version FROM tasks WHERE id = $1", uuid.UUID(task["id"]))
    assert row["title"] == "alice's" and row["version"] == 1


async def test_patch_missing_is_404(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.patch(
        f"/api/tasks/{uuid.uuid4()}", json={"title": "x"}, headers=alice.headers
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


async def test_patch_bad_types_is_422(client: httpx.AsyncClient, alice: User) -> None:
    task = await create(client, alice)
    for body in ({"completed": "done"}, {"priority": 3}, {"tags": "a,b"}, {"title": 5}):
        response = await client.patch(f"/api/tasks/{task['id']}", json=body, headers=alice.headers)
        assert response.status_code == 422, body


async def test_put_replaces_and_resets_omitted_fields(client: httpx.AsyncClient, alice: User) -> None:
    task = await create(
        client, alice, description="d", priority="high", tags=["x"], due_date="2027-01-01T00:00:00Z",
        completed=True,
    )
    response = await client.put(
        f"/api/tasks/{task['id']}", json={"title": "Replaced"}, headers=alice.headers
    )
    assert response.status_code == 200
    replaced = response.json()["data"]
    assert replaced["title"] == "Replaced"
    assert replaced["description"] is None and replaced["priority"] == "medium"
    assert replaced["tags"] == [] and replaced["due_date"] is None
    assert replaced["completed"] is False and replaced["completed_at"] is None
    assert replaced["version"] == 2 and replaced["id"] == task["id"]
    assert replaced["created_at"] == task["created_at"]


async def test_put_others_task_is_403(client: httpx.AsyncClient, alice: User, bob: User) -> None:
    task = await create(client, alice)
    response = await client.put(f"/api/tasks/{task['id']}", json={"title": "x"}, headers=bob.headers)
    assert response.status_code == 403


# -- Story 4: delete ---------------------------------------------------------------------------


async def test_delete_own_then_gone(client: httpx.AsyncClient, alice: User) -> None:
    task = await create(client, alice)
    response = await client.delete(f"/api/tasks/{task['id']}", headers=alice.headers)
    assert response.status_code == 204 and response.content == b""
    assert "x-request-id" in response.headers
    assert (await client.get(f"/api/tasks/{task['id']}", headers=alice.headers)).status_code == 404
    assert (await client.delete(f"/api/tasks/{task['id']}", headers=alice.headers)).status_code == 404


async def test_delete_others_is_403_and_intact(
    client: httpx.AsyncClient, alice: User, bob: User, db: asyncpg.Connection
) -> None:
    task = await create(client, alice)
    response = await client.delete(f"/api/tasks/{task['id']}", headers=bob.headers)
    assert response.status_code == 403
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE id = $1", uuid.UUID(task["id"])) == 1


async def test_delete_missing_is_404(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.delete(f"/api/tasks/{uuid.uuid4()}", headers=alice.headers)
    assert response.status_code == 404


# -- Story 5: get one --------------------------------------------------------------------------


async def test_get_one_200_403_404_and_bad_uuid(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    task = await create(client, alice)
    response = await client.get(f"/api/tasks/{task['id']}", headers=alice.headers)
    assert response.status_code == 200 and response.json()["data"] == task
    assert response.headers["etag"] == '"1"'
    assert (await client.get(f"/api/tasks/{task['id']}", headers=bob.headers)).status_code == 403
    assert (await client.get(f"/api/tasks/{uuid.uuid4()}", headers=alice.headers)).status_code == 404
    response = await client.get("/api/tasks/12345", headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "path.task_id"


# -- Versions, ETags, stats --------------------------------------------------------------------


async def test_if_match(client: httpx.AsyncClient, alice: User, db: asyncpg.Connection) -> None:
    task = await create(client, alice)
    url = f"/api/tasks/{task['id']}"
    stale = {**alice.headers, "If-Match": '"7"'}
    assert (await client.patch(url, json={"title": "x"}, headers=stale)).status_code == 412
    assert (await client.put(url, json={"title": "x"}, headers=stale)).status_code == 412
    response = await client.delete(url, headers=stale)
    assert response.status_code == 412
    assert response.json()["error"]["code"] == "PRECONDITION_FAILED"
    assert (await client.patch(url, json={"title": "x"}, headers={**alice.headers, "If-Match": 'W/"1"'})).status_code == 412
    assert await db.fetchval("SELECT version FROM tasks WHERE id = $1", uuid.UUID(task["id"])) == 1
    fresh = {**alice.headers, "If-Match": '"5", "1"'}
    response = await client.patch(url, json={"title": "ok"}, headers=fresh)
    assert response.status_code == 200 and response.headers["etag"] == '"2"'
    assert (await client.patch(url, json={"title": "any"}, headers={**alice.headers, "If-Match": "*"})).status_code == 200
    assert (await client.delete(url, headers={**alice.headers, "If-Match": '"3"'})).status_code == 204


async def test_stats(client: httpx.AsyncClient, alice: User, bob: User) -> None:
    await create(client, alice, priority="high", completed=True)
    await create(client, alice, priority="low", due_date="2000-01-01T00:00:00Z")
    await create(client, alice, priority="low", due_date="2000-01-01T00:00:00Z", completed=True)
    await create(client, alice, due_date="2999-01-01T00:00:00Z")
    await create(client, bob)
    response = await client.get("/api/tasks/stats", headers=alice.headers)
    assert response.status_code == 200
    assert response.json()["data"] == {
        "total": 4, "completed": 2, "pending": 2, "overdue": 1,
        "by_priority": {"low": 2, "medium": 1, "high": 1},
    }


async def test_nul_in_text_is_422_not_500(client: httpx.AsyncClient, alice: User) -> None:
    for body in ({"title": "a\u0000b"}, {"title": "ok", "description": "x\u0000"}, {"title": "ok", "tags": ["\u0000"]}):
        response = await client.post("/api/tasks", json=body, headers=alice.headers)
        assert response.status_code == 422, body
    response = await client.get("/api/tasks", params={"q": "a\u0000"}, headers=alice.headers)
    assert response.status_code == 422
