"""Every error is an `{error, meta}` envelope with a stable code, a useful message, the request id
of its response, and no internals; and a rejected write never leaves a row behind."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from tests.support.factories import User

CONTRACT = yaml.safe_load((Path(__file__).resolve().parents[2] / "openapi.yaml").read_text())
DOCUMENTED_METHODS = {
    path: {m.upper() for m in item if m in ("get", "put", "post", "delete", "patch")}
    for path, item in CONTRACT["paths"].items()
}
LIMIT = 65536  # Settings.max_body_bytes default, and the contract's 413 example

# Internals that must never reach a client: stack traces, source paths, drivers, SQL.
LEAKS = [
    re.compile(r"Traceback|File \"|\.py\b|\bline \d+"),
    re.compile(r"asyncpg|psycopg|sqlalchemy|postgres|pydantic_core|starlette", re.IGNORECASE),
    re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|RETURNING)\b"),
]


def assert_error(
    response: httpx.Response, status: int, code: str, message_contains: str | None = None
) -> dict[str, Any]:
    """Checks the whole error envelope and returns its `error` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "meta"}, body
    error, meta = body["error"], body["meta"]
    assert error["code"] == code
    message = error["message"]
    assert isinstance(message, str) and len(message) >= 8 and message != code, message
    if message_contains is not None:
        assert message_contains.lower() in message.lower(), message
    request_id = response.headers["x-request-id"]
    assert meta["request_id"] == request_id
    assert str(uuid.UUID(request_id)) == request_id
    assert datetime.fromisoformat(meta["timestamp"]).utcoffset() is not None
    for leak in LEAKS:
        assert not leak.search(response.text), f"{leak.pattern!r} leaked: {response.text}"
    return error


def assert_details(error: dict[str, Any], expected: dict[str, str]) -> None:
    """`details` names exactly the expected fields, each with its reason type and a message."""
    details = error["details"]
    assert {d["field"]: d["type"] for d in details} == expected, details
    for detail in details:
        assert isinstance(detail["message"], str) and detail["message"].strip(), detail


async def task_count(db: asyncpg.Connection, user: User) -> int:
    return int(await db.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1", user.id))


async def assert_nothing_written(db: asyncpg.Connection, user: User) -> None:
    assert await task_count(db, user) == 0
    keys = await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE user_id = $1", user.id)
    assert keys == 0


async def create_task(client: httpx.AsyncClient, user: User, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/tasks", json={"title": "Original", **fields}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


async def assert_task_unchanged(db: asyncpg.Connection, task: dict[str, Any]) -> None:
    row = await db.fetchrow(
        "SELECT title, version, updated_at FROM tasks WHERE id = $1", uuid.UUID(task["id"])
    )
    assert row is not None
    assert row["title"] == task["title"]
    assert row["version"] == task["version"] == 1
    assert row["updated_at"] == datetime.fromisoformat(task["updated_at"])


def json_headers(user: User) -> dict[str, str]:
    return {**user.headers, "Content-Type": "application/json"}


# ---------------------------------------------------------------------------------------------
# 404: no such route


@pytest.mark.parametrize(
    "path",
    ["/nope", "/api", "/api/nope", "/api/tasks/6f1c2a3e-8a53-4c8e-9d2f-1f6a9f5b7c01/extra"],
)
async def test_unknown_route_is_404(client: httpx.AsyncClient, alice: User, path: str) -> None:
    response = await client.get(path, headers=alice.headers)
    error = assert_error(response, 404, "NOT_FOUND", "not found")
    assert "details" not in error


async def test_unknown_route_is_404_before_any_body_or_auth_check(
    client: httpx.AsyncClient,
) -> None:
    # No credentials and a non-JSON body: the route does not exist, so neither 401 nor 415.
    response = await client.post(
        "/api/nope", content=b"hello", headers={"Content-Type": "text/plain"}
    )
    assert_error(response, 404, "NOT_FOUND")


# ---------------------------------------------------------------------------------------------
# 405: documented path, undocumented method


def _concrete(path: str) -> str:
    return path.replace("{task_id}", "6f1c2a3e-8a53-4c8e-9d2f-1f6a9f5b7c01")


def _shadowed(path: str, method: str) -> bool:
    """Whether a templated sibling path of the contract also matches `path` with this method
    (PUT /api/tasks/stats also fits /api/tasks/{task_id}, which takes PUT)."""
    for other, methods in DOCUMENTED_METHODS.items():
        if other != path and "{" in other and method in methods:
            pattern = re.sub(r"\\\{[^/]+\\\}", "[^/]+", re.escape(other))
            if re.fullmatch(pattern, path):
                return True
    return False


def _method_cases() -> list[Any]:
    cases = []
    for path, documented in DOCUMENTED_METHODS.items():
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "TRACE", "OPTIONS"):
            if method not in documented:
                shadow = " (templated sibling takes it)" if _shadowed(path, method) else ""
                cases.append(pytest.param(method, path, id=f"{method} {path}{shadow}"))
    return cases


def _allow(response: httpx.Response) -> set[str]:
    return {m.strip() for m in response.headers["allow"].split(",") if m.strip()}


@pytest.mark.parametrize(("method", "path"), _method_cases())
async def test_undocumented_method_is_405_with_the_documented_allow(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, method: str, path: str
) -> None:
    kwargs: dict[str, Any] = {"headers": alice.headers}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {"title": "Should not be written"}
    response = await client.request(method, _concrete(path), **kwargs)
    error = assert_error(response, 405, "METHOD_NOT_ALLOWED", method)
    assert "details" not in error
    assert _allow(response) == DOCUMENTED_METHODS[path]
    await assert_nothing_written(db, alice)


BAD_BODIES: dict[str, tuple[dict[str, str], Any]] = {
    # id: (extra headers, body factory); factories run at test time
    "text-plain": ({"Content-Type": "text/plain"}, lambda: b'{"title": "x"}'),
    "no-content-type": ({}, lambda: b'{"title": "x"}'),
    "malformed-json": ({"Content-Type": "application/json"}, lambda: b'{"title": '),
    "oversized": ({"Content-Type": "application/json"}, lambda: json_body_of_size(LIMIT + 1)),
}


def _method_with_bad_body_cases() -> list[Any]:
    cases = []
    for path, documented in DOCUMENTED_METHODS.items():
        for method in ("POST", "PUT", "PATCH"):
            if method in documented:
                continue
            for body_id in BAD_BODIES:
                cases.append(
                    pytest.param(method, path, body_id, id=f"{method} {path} {body_id}")
                )
    return cases


@pytest.mark.parametrize(("method", "path", "body_id"), _method_with_bad_body_cases())
async def test_undocumented_method_is_405_whatever_the_body(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    method: str,
    path: str,
    body_id: str,
) -> None:
    """The method is wrong before the body is: 405 on every documented path, as the router
    answers for PUT /api/tasks, not 415/400/413 about a body the operation does not take."""
    headers, body = BAD_BODIES[body_id]
    response = await client.request(
        method, _concrete(path), content=body(), headers={**alice.headers, **headers}
    )
    assert_error(response, 405, "METHOD_NOT_ALLOWED", method)
    assert _allow(response) == DOCUMENTED_METHODS[path]
    await assert_nothing_written(db, alice)


async def test_put_on_the_collection_is_405_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    response = await client.put("/api/tasks", json={"title": "x"}, headers=alice.headers)
    assert_error(response, 405, "METHOD_NOT_ALLOWED", "PUT")
    assert _allow(response) == {"GET", "POST"}
    await assert_nothing_written(db, alice)


async def test_trace_on_a_task_is_405(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.request("TRACE", f"/api/tasks/{uuid.uuid4()}", headers=alice.headers)
    assert_error(response, 405, "METHOD_NOT_ALLOWED", "TRACE")
    assert _allow(response) == {"GET", "PUT", "PATCH", "DELETE"}


@pytest.mark.parametrize("path", ["/openapi.json", "/openapi.yaml", "/docs"])
async def test_405_on_a_non_contract_route_still_allows_get(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post(path, json={})
    assert_error(response, 405, "METHOD_NOT_ALLOWED", "POST")
    assert "GET" in _allow(response)


# ---------------------------------------------------------------------------------------------
# 400: the body is not JSON

MALFORMED_BODIES = {
    "truncated": b'{"title": "Buy milk"',
    "not-json": b"title=Buy milk",
    "trailing-garbage": b'{"title": "Buy milk"} and more',
    "single-quotes": b"{'title': 'Buy milk'}",
    "invalid-utf8": b'{"title": "\xff\xfe"}',
}


@pytest.mark.parametrize("body", list(MALFORMED_BODIES.values()), ids=list(MALFORMED_BODIES))
async def test_unparseable_json_is_400(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, body: bytes
) -> None:
    response = await client.post("/api/tasks", content=body, headers=json_headers(alice))
    error = assert_error(response, 400, "MALFORMED_REQUEST", "JSON")
    assert "details" not in error
    await assert_nothing_written(db, alice)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_unparseable_json_on_an_update_is_400_and_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, method: str
) -> None:
    task = await create_task(client, alice)
    response = await client.request(
        method, f"/api/tasks/{task['id']}", content=b'{"title": ', headers=json_headers(alice)
    )
    assert_error(response, 400, "MALFORMED_REQUEST", "JSON")
    await assert_task_unchanged(db, task)


# ---------------------------------------------------------------------------------------------
# 415: the body is not JSON by its media type

NOT_JSON_TYPES = {
    "text-plain": "text/plain",
    "form": "application/x-www-form-urlencoded",
    "xml": "application/xml",
    "json-lookalike": "application/jsonx",
}


@pytest.mark.parametrize("content_type", list(NOT_JSON_TYPES.values()), ids=list(NOT_JSON_TYPES))
async def test_non_json_content_type_is_415(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, content_type: str
) -> None:
    response = await client.post(
        "/api/tasks",
        content=b'{"title": "Buy milk"}',
        headers={**alice.headers, "Content-Type": content_type},
    )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE", "application/json")
    await assert_nothing_written(db, alice)


async def test_missing_content_type_is_415(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    response = await client.post(
        "/api/tasks", content=b'{"title": "Buy milk"}', headers=alice.headers
    )
    assert "content-type" not in response.request.headers
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE", "application/json")
    await assert_nothing_written(db, alice)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_text_plain_on_an_update_is_415_and_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, method: str
) -> None:
    task = await create_task(client, alice)
    response = await client.request(
        method,
        f"/api/tasks/{task['id']}",
        content=b'{"title": "Changed"}',
        headers={**alice.headers, "Content-Type": "text/plain"},
    )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    await assert_task_unchanged(db, task)


async def test_json_with_parameters_and_suffix_types_is_accepted(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    """The positive control for 415: what counts as JSON is really accepted."""
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await client.post(
            "/api/tasks",
            content=b'{"title": "Buy milk"}',
            headers={**alice.headers, "Content-Type": content_type},
        )
        assert response.status_code == 201, (content_type, response.text)
    assert await task_count(db, alice) == 2


# ---------------------------------------------------------------------------------------------
# 413: the body is over the limit, whether its size is declared or not


def json_body_of_size(size: int) -> bytes:
    """A valid TaskWrite document of exactly `size` bytes (padded with JSON whitespace)."""
    base = b'{"title": "Boundary"}'
    assert size >= len(base)
    return base[:-1] + b" " * (size - len(base)) + b"}"


async def _chunks(body: bytes, size: int = 8192) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def _post_body(
    client: httpx.AsyncClient, user: User, body: bytes, mode: str
) -> httpx.Response:
    content: bytes | AsyncIterator[bytes] = body if mode == "content-length" else _chunks(body)
    response = await client.post("/api/tasks", content=content, headers=json_headers(user))
    if mode == "content-length":
        assert response.request.headers["content-length"] == str(len(body))
    else:
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
    return response


@pytest.mark.parametrize("mode", ["content-length", "chunked"])
async def test_body_one_byte_over_the_limit_is_413(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, mode: str
) -> None:
    response = await _post_body(client, alice, json_body_of_size(LIMIT + 1), mode)
    assert_error(response, 413, "PAYLOAD_TOO_LARGE", str(LIMIT))
    await assert_nothing_written(db, alice)


@pytest.mark.parametrize("mode", ["content-length", "chunked"])
async def test_body_far_over_the_limit_is_413(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, mode: str
) -> None:
    big = b'{"title": "Big", "description": "' + b"x" * (2 * LIMIT) + b'"}'
    response = await _post_body(client, alice, big, mode)
    assert_error(response, 413, "PAYLOAD_TOO_LARGE", str(LIMIT))
    await assert_nothing_written(db, alice)


@pytest.mark.parametrize("mode", ["content-length", "chunked"])
async def test_body_exactly_at_the_limit_is_accepted(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, mode: str
) -> None:
    response = await _post_body(client, alice, json_body_of_size(LIMIT), mode)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["title"] == "Boundary"
    assert await task_count(db, alice) == 1


async def test_oversized_update_is_413_and_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    task = await create_task(client, alice)
    response = await client.patch(
        f"/api/tasks/{task['id']}",
        content=json_body_of_size(LIMIT + 1),
        headers=json_headers(alice),
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    await assert_task_unchanged(db, task)


# ---------------------------------------------------------------------------------------------
# 422: each invalid field is named as `<location>.<name>`

INVALID_CREATES: dict[str, tuple[Any, dict[str, str]]] = {
    "missing-title": ({"description": "no title"}, {"body.title": "missing"}),
    "empty-object": ({}, {"body.title": "missing"}),
    "unknown-field": ({"title": "x", "foo": 1}, {"body.foo": "extra_forbidden"}),
    "nul-in-title": ({"title": "Buy\u0000milk"}, {"body.title": "string_pattern_mismatch"}),
    "nul-only-title": ({"title": "\u0000"}, {"body.title": "string_pattern_mismatch"}),
    "blank-title": ({"title": " \t "}, {"body.title": "string_pattern_mismatch"}),
    "nul-in-description": (
        {"title": "x", "description": "a\u0000b"},
        {"body.description": "string_pattern_mismatch"},
    ),
    "nul-in-tag": ({"title": "x", "tags": ["a\u0000"]}, {"body.tags.0": "string_pattern_mismatch"}),
    "title-too-long": ({"title": "x" * 256}, {"body.title": "string_too_long"}),
    "naive-due-date": (
        {"title": "x", "due_date": "2026-12-01T10:00:00"},
        {"body.due_date": "string_pattern_mismatch"},
    ),
    "not-an-object": (["title"], {"body": "model_type"}),
    "several-at-once": (
        {"title": "", "priority": "urgent", "completed": "yes"},
        {"body.title": "string_too_short", "body.priority": "enum", "body.completed": "bool_type"},
    ),
}


@pytest.mark.parametrize(
    ("payload", "expected"), list(INVALID_CREATES.values()), ids=list(INVALID_CREATES)
)
async def test_invalid_create_is_422_naming_each_field(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    payload: Any,
    expected: dict[str, str],
) -> None:
    response = await client.post(
        "/api/tasks", json=payload, headers={**alice.headers, "Idempotency-Key": "k-1"}
    )
    error = assert_error(response, 422, "VALIDATION_ERROR", "validation")
    assert_details(error, expected)
    await assert_nothing_written(db, alice)


READ_ONLY = {
    "id": str(uuid.uuid4()),
    "user_id": str(uuid.uuid4()),
    "version": 7,
    "created_at": "2026-01-01T00:00:00+00:00",
    "updated_at": "2026-01-01T00:00:00+00:00",
    "completed_at": "2026-01-01T00:00:00+00:00",
}


@pytest.mark.parametrize("field", list(READ_ONLY))
async def test_read_only_field_in_a_create_is_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, bob: User, field: str
) -> None:
    value = str(bob.id) if field == "user_id" else READ_ONLY[field]
    response = await client.post(
        "/api/tasks", json={"title": "Sneaky", field: value}, headers=alice.headers
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert_details(error, {f"body.{field}": "extra_forbidden"})
    await assert_nothing_written(db, alice)
    await assert_nothing_written(db, bob)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("field", list(READ_ONLY))
async def test_read_only_field_in_an_update_is_422_and_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, method: str, field: str
) -> None:
    task = await create_task(client, alice)
    response = await client.request(
        method,
        f"/api/tasks/{task['id']}",
        json={"title": "Changed", field: READ_ONLY[field]},
        headers=alice.headers,
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert_details(error, {f"body.{field}": "extra_forbidden"})
    await assert_task_unchanged(db, task)
    assert await task_count(db, alice) == 1


@pytest.mark.parametrize(
    ("method", "payload", "expected"),
    [
        ("PUT", {"description": "no title"}, {"body.title": "missing"}),
        ("PUT", {"title": "a\u0000"}, {"body.title": "string_pattern_mismatch"}),
        ("PATCH", {"title": None}, {"body.title": "null_not_allowed"}),
        ("PATCH", {"title": "ok", "bogus": True}, {"body.bogus": "extra_forbidden"}),
    ],
    ids=["put-missing-title", "put-nul-title", "patch-null-title", "patch-unknown-field"],
)
async def test_invalid_update_is_422_and_changes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    method: str,
    payload: dict[str, Any],
    expected: dict[str, str],
) -> None:
    task = await create_task(client, alice)
    response = await client.request(
        method, f"/api/tasks/{task['id']}", json=payload, headers=alice.headers
    )
    assert_details(assert_error(response, 422, "VALIDATION_ERROR"), expected)
    await assert_task_unchanged(db, task)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("limit=0", {"query.limit": "greater_than_equal"}),
        ("limit=101", {"query.limit": "less_than_equal"}),
        ("limit=ten", {"query.limit": "int_parsing"}),
        ("status=done", {"query.status": "enum"}),
        ("sort=-nonsense", {"query.sort": "enum"}),
        ("tag=%00", {"query.tag": "string_pattern_mismatch"}),
        ("due_before=2026-12-01T00:00:00", {"query.due_before": "string_pattern_mismatch"}),
        ("cursor=not*a*cursor", {"query.cursor": "string_pattern_mismatch"}),
        (
            "limit=0&priority=urgent",
            {"query.limit": "greater_than_equal", "query.priority": "enum"},
        ),
    ],
)
async def test_invalid_query_is_422_naming_each_parameter(
    client: httpx.AsyncClient, alice: User, query: str, expected: dict[str, str]
) -> None:
    response = await client.get(f"/api/tasks?{query}", headers=alice.headers)
    assert_details(assert_error(response, 422, "VALIDATION_ERROR"), expected)


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("task_id", ["not-a-uuid", "123", "6f1c2a3e-8a53-4c8e-9d2f-1f6a9f5b7c0"])
async def test_non_uuid_task_id_is_422_on_path_task_id(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, method: str, task_id: str
) -> None:
    kwargs: dict[str, Any] = {"headers": alice.headers}
    if method in ("PUT", "PATCH"):
        kwargs["json"] = {"title": "x"}
    response = await client.request(method, f"/api/tasks/{task_id}", **kwargs)
    assert_details(
        assert_error(response, 422, "VALIDATION_ERROR"), {"path.task_id": "uuid_parsing"}
    )
    await assert_nothing_written(db, alice)


async def test_invalid_idempotency_key_is_422_on_its_header(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    response = await client.post(
        "/api/tasks",
        json={"title": "x"},
        headers={**alice.headers, "Idempotency-Key": "has space"},
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert_details(error, {"header.Idempotency-Key": "string_pattern_mismatch"})
    await assert_nothing_written(db, alice)


async def test_invalid_cursor_is_422_on_query_cursor(
    client: httpx.AsyncClient, alice: User
) -> None:
    response = await client.get(
        "/api/tasks?cursor=AAAAAAAAAAAAAAAAAAAAAAAAAAAA", headers=alice.headers
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert_details(error, {"query.cursor": "cursor_invalid"})


# ---------------------------------------------------------------------------------------------
# Writes refused for another reason leave nothing behind either


async def test_put_on_a_missing_task_is_404_and_creates_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    response = await client.put(
        f"/api/tasks/{uuid.uuid4()}", json={"title": "Upsert?"}, headers=alice.headers
    )
    assert_error(response, 404, "NOT_FOUND", "not found")
    await assert_nothing_written(db, alice)


async def test_writes_on_another_users_task_are_403_and_change_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, bob: User
) -> None:
    task = await create_task(client, alice)
    url = f"/api/tasks/{task['id']}"
    for method, kwargs in (
        ("PUT", {"json": {"title": "Stolen"}}),
        ("PATCH", {"json": {"title": "Stolen"}}),
        ("DELETE", {}),
    ):
        response = await client.request(method, url, headers=bob.headers, **kwargs)
        assert_error(response, 403, "FORBIDDEN", "another user")
    await assert_task_unchanged(db, task)
    await assert_nothing_written(db, bob)


# ---------------------------------------------------------------------------------------------
# Inputs that pass validation but could crash the server: still a 4xx envelope, never a 500


@pytest.mark.parametrize("due_date", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_out_of_range_due_date_is_422_not_500(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, due_date: str
) -> None:
    response = await client.post(
        "/api/tasks", json={"title": "Far away", "due_date": due_date}, headers=alice.headers
    )
    await assert_nothing_written(db, alice)
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert [d["field"] for d in error["details"]] == ["body.due_date"]


@pytest.mark.parametrize("param", ["due_before", "due_after"])
async def test_out_of_range_due_filter_is_422_not_500(
    client: httpx.AsyncClient, alice: User, param: str
) -> None:
    response = await client.get(
        "/api/tasks", params={param: "0001-01-01T00:00:00+14:00"}, headers=alice.headers
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert [d["field"] for d in error["details"]] == [f"query.{param}"]


@pytest.mark.parametrize(
    "if_match",
    [b'"\xb2"', b'"1\xb9"', b'W/"1"', b'"one"'],
    ids=["superscript-two", "one-superscript-one", "weak-current", "not-a-number"],
)
@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_if_match_naming_no_version_is_412_not_500(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, method: str, if_match: bytes
) -> None:
    """Latin-1 header bytes 0xB2/0xB9 decode to superscript digits, for which str.isdigit() is
    true but int() fails; none of these names a version, so the write is refused with 412."""
    task = await create_task(client, alice)
    kwargs: dict[str, Any] = {"json": {"title": "Changed"}} if method == "PATCH" else {}
    response = await client.request(
        method,
        f"/api/tasks/{task['id']}",
        headers={**alice.headers, "If-Match": if_match},  # type: ignore[dict-item]
        **kwargs,
    )
    await assert_task_unchanged(db, task)
    assert_error(response, 412, "PRECONDITION_FAILED")
