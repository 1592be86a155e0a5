"""Hostile input over real HTTP (uvicorn + PostgreSQL): bodies, parameters and headers built to
break the parser, the validator, the SQL or the server, sent as raw bytes where a JSON encoder
would clean them up.

For every refused request: the status is the documented 4xx, `error.code` is the documented
code, a 422 names each offending field in `details`, `meta.request_id` is the response's
X-Request-ID, and no traceback is in the body. No response of this module may be a 5xx (an
httpx response hook checks every one). For writes (POST; PUT, PATCH and DELETE on an existing
task of alice's) the whole `tasks` and `idempotency_keys` tables are hashed before and after:
a refused request changes neither. pytest runs one test at a time, so a whole-table hash is
valid.

Not repeated here, because tests/http/test_errors.py, test_list.py, test_tasks_crud.py and
test_auth.py already check it: the basic malformed bodies (truncated, single quotes, trailing
garbage, b"\\xff\\xfe"), a JSON array body on POST, text/plain and missing Content-Type, 413 at
the default limit (one byte over, 2x over, chunked), "foo" and read-only fields, NUL in text,
limit 0/101/"ten", naive due_before, "not*a*cursor" and tampered cursors, q "%" "_" "100%",
an Idempotency-Key with a space, weak/superscript If-Match, a 9,000-byte token.

Behaviour observed and pinned, or only documented:
- Control characters other than NUL (U+0001, U+001F, U+007F) are valid text for the contract
  (its patterns refuse only NUL, and blank means JSON Schema's `\\s`, which does not include
  them): they are stored exactly and round-trip through GET and `q`.
- Repeated query parameters: the last value wins (FastAPI); `limit=2&limit=abc` is a 422.
- A 100 KB (even 1 MB) Authorization header reaches the app (uvicorn's httptools parser has no
  header size limit) and is a 401 from the token size check, not a 431.
- Requests that are not valid HTTP/1.1 (conflicting or negative Content-Length, Content-Length
  with Transfer-Encoding, a raw 0xFF in the target, DEL in a header value) never reach the app:
  uvicorn answers its own `400 Invalid HTTP request received.` in text/plain, with no envelope
  and no X-Request-ID.
- Non-canonical UUID spellings in the path (braces, no dashes, urn:uuid:) currently resolve to
  the same task (a 422 would do too); upper case is accepted, as `format: uuid` requires.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from tests.support.factories import User
from tests.support.servers import direct_connection, running_server, settings

TASKS = "/api/tasks"
DEFAULT_LIMIT = 65536  # Settings.max_body_bytes default
SMALL_LIMIT = 2048  # the second server's max_body_bytes

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Helpers


async def _refuse_5xx(response: httpx.Response) -> None:
    request = response.request
    assert response.status_code < 500, f"{request.method} {request.url} -> {response.status_code}"


# `client` and `db` as in conftest.py, but one of each for the module: a new httpx client costs
# ~40 ms (its SSL context), which over ~450 cases would be most of this module's run time.


@pytest.fixture(scope="module")
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    hooks = {"response": [_refuse_5xx]}
    async with httpx.AsyncClient(base_url=base_url, timeout=30, event_hooks=hooks) as http:
        yield http


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    async with direct_connection(database_url) as connection:
        yield connection


async def snapshot(db: asyncpg.Connection) -> dict[str, str]:
    """Row count and md5 of every row's text, for each table a request could write."""
    tables = {}
    for table in ("tasks", "idempotency_keys"):
        tables[table] = await db.fetchval(
            f"SELECT count(*)::text || ':' || coalesce(md5(string_agg(r::text, ',' "
            f"ORDER BY r::text)), '') FROM {table} r"
        )
    return tables


async def unchanged(db: asyncpg.Connection, request: Awaitable[T]) -> T:
    """Sends the (not yet started) request; asserts that the database is exactly as before."""
    before = await snapshot(db)
    response = await request
    after = await snapshot(db)
    shown = response.text[:300] if isinstance(response, httpx.Response) else ""
    assert after == before, f"a refused request changed the database: {response!r} {shown}"
    return response


def assert_error(
    response: httpx.Response, status: int, code: str, fields: list[str] | None = None
) -> dict[str, Any]:
    """The whole error envelope; `fields`: exactly the fields `details` must name."""
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text and 'File "' not in response.text
    body = response.json()
    assert set(body) == {"error", "meta"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    request_id = response.headers["x-request-id"]
    assert body["meta"]["request_id"] == request_id
    assert str(uuid.UUID(request_id)) == request_id
    if status == 422:
        assert fields is not None, "a 422 must name its fields"
    if fields is not None:
        named = sorted(detail["field"] for detail in error.get("details", []))
        assert named == sorted(fields), error
    return dict(error)


def assert_unparseable_or_invalid(response: httpx.Response, fields: list[str]) -> None:
    """For input that JSON's grammar allows but Unicode does not (a lone surrogate escape):
    400 when the parser refuses it, or 422 naming the field when the validator does."""
    if response.status_code == 400:
        assert_error(response, 400, "MALFORMED_REQUEST")
    else:
        assert_error(response, 422, "VALIDATION_ERROR", fields)


def json_headers(user: User, content_type: str = "application/json") -> dict[str, str]:
    return {**user.headers, "Content-Type": content_type}


@pytest.fixture
async def task(client: httpx.AsyncClient, alice: User) -> dict[str, Any]:
    """An existing task of alice's, with every field set, so any write would show."""
    response = await client.post(
        TASKS,
        json={
            "title": "Original",
            "description": "Original description",
            "priority": "high",
            "due_date": "2026-12-01T10:00:00+00:00",
            "tags": ["home"],
        },
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


WRITE_METHODS = ["POST", "PUT", "PATCH"]


def url_for(method: str, task: dict[str, Any]) -> str:
    return TASKS if method == "POST" else f"{TASKS}/{task['id']}"


# ---------------------------------------------------------------------------------------------
# 400: bodies that are not JSON text (RFC 8259)

UNPARSEABLE = {
    "empty": b"",
    "whitespace-only": b" \r\n\t ",
    "open-brace": b"{",
    "unterminated-string": b'{"title": "Buy',
    "truncated-escape": b'{"title": "\\u00',
    "bad-escape": b'{"title": "\\x41"}',
    "trailing-comma": b'{"title": "x",}',
    "comment": b'{"title": "x" /* hi */}',
    "unquoted-key": b'{title: "x"}',
    "missing-comma": b'{"title": "x" "priority": "low"}',
    "two-documents": b'{"title": "x"}{"title": "y"}',
    "nul-after-document": b'{"title": "x"}\x00',
    "raw-nul-in-string": b'{"title": "a\x00b"}',
    "raw-u0001-in-string": b'{"title": "a\x01b"}',
    "raw-newline-in-string": b'{"title": "a\nb"}',
    "utf8-overlong": b'{"title": "\xc0\xaf"}',
    "utf8-truncated": b'{"title": "\xc3"}',
    "utf8-above-u10ffff": b'{"title": "\xf4\x90\x80\x80"}',
    "utf8-five-bytes": b'{"title": "\xf8\x88\x80\x80\x80"}',
    "utf8-encoded-surrogate": b'{"title": "\xed\xa0\x80"}',
    "latin1-e-acute": b'{"title": "caf\xe9"}',
    "invalid-utf8-in-key": b'{"\xff": 1, "title": "x"}',
    "utf16": '{"title": "x"}'.encode("utf-16"),  # RFC 8259 8.1: exchanged JSON is UTF-8
    "utf32": '{"title": "x"}'.encode("utf-32"),
    "nested-10000-arrays": b"[" * 10_000 + b"]" * 10_000,
    "nested-10000-objects-in-title": b'{"title": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001,
    "nested-10000-arrays-in-tags": (
        b'{"title": "x", "tags": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    ),
}


@pytest.mark.parametrize("method", WRITE_METHODS)
@pytest.mark.parametrize("body", list(UNPARSEABLE.values()), ids=list(UNPARSEABLE))
async def test_unparseable_body_is_400(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    task: dict[str, Any],
    method: str,
    body: bytes,
) -> None:
    response = await unchanged(
        db,
        client.request(method, url_for(method, task), content=body, headers=json_headers(alice)),
    )
    assert_error(response, 400, "MALFORMED_REQUEST")


# ---------------------------------------------------------------------------------------------
# 422: JSON that is not an object, wrong types, unknown fields, out-of-range values

NOT_AN_OBJECT = {
    "string": b'"Buy milk"',
    "number": b"42",
    "huge-number": b"1" + b"0" * 400,
    "null": b"null",
    "true": b"true",
    "false": b"false",
    "array-of-object": b'[{"title": "x"}]',
}


@pytest.mark.parametrize("method", WRITE_METHODS)
@pytest.mark.parametrize("body", list(NOT_AN_OBJECT.values()), ids=list(NOT_AN_OBJECT))
async def test_json_that_is_not_an_object_is_422_on_body(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    task: dict[str, Any],
    method: str,
    body: bytes,
) -> None:
    response = await unchanged(
        db,
        client.request(method, url_for(method, task), content=body, headers=json_headers(alice)),
    )
    assert_error(response, 422, "VALIDATION_ERROR", ["body"])


# (raw body, the fields a 422 must name). Every body carries a valid title unless the title is
# the point, so that POST and PUT name the same fields as PATCH.
INVALID_FIELDS: dict[str, tuple[bytes, list[str]]] = {
    "title-number": (b'{"title": 123}', ["body.title"]),
    "title-float-overflow": (b'{"title": 1e400}', ["body.title"]),
    "title-true": (b'{"title": true}', ["body.title"]),
    "title-array": (b'{"title": ["x"]}', ["body.title"]),
    "title-object": (b'{"title": {"text": "x"}}', ["body.title"]),
    "title-null": (b'{"title": null}', ["body.title"]),
    "title-60000-chars": (b'{"title": "' + b"x" * 60_000 + b'"}', ["body.title"]),
    "description-number": (b'{"title": "x", "description": 42}', ["body.description"]),
    "description-false": (b'{"title": "x", "description": false}', ["body.description"]),
    "description-array": (b'{"title": "x", "description": ["x"]}', ["body.description"]),
    "completed-1": (b'{"title": "x", "completed": 1}', ["body.completed"]),
    "completed-0": (b'{"title": "x", "completed": 0}', ["body.completed"]),
    "completed-string-true": (b'{"title": "x", "completed": "true"}', ["body.completed"]),
    "completed-null": (b'{"title": "x", "completed": null}', ["body.completed"]),
    "priority-number": (b'{"title": "x", "priority": 1}', ["body.priority"]),
    "priority-huge-int": (
        b'{"title": "x", "priority": 123456789012345678901234567890}',
        ["body.priority"],
    ),
    "priority-upper-case": (b'{"title": "x", "priority": "HIGH"}', ["body.priority"]),
    "priority-empty": (b'{"title": "x", "priority": ""}', ["body.priority"]),
    "priority-null": (b'{"title": "x", "priority": null}', ["body.priority"]),
    "due-date-unix-number": (b'{"title": "x", "due_date": 1700000000}', ["body.due_date"]),
    "due-date-float": (b'{"title": "x", "due_date": 1.5}', ["body.due_date"]),
    "due-date-unix-string": (b'{"title": "x", "due_date": "1700000000"}', ["body.due_date"]),
    "due-date-true": (b'{"title": "x", "due_date": true}', ["body.due_date"]),
    "tags-string": (b'{"title": "x", "tags": "home"}', ["body.tags"]),
    "tags-object": (b'{"title": "x", "tags": {"home": true}}', ["body.tags"]),
    "tags-null": (b'{"title": "x", "tags": null}', ["body.tags"]),
    "tag-null": (b'{"title": "x", "tags": [null]}', ["body.tags.0"]),
    "tag-number": (b'{"title": "x", "tags": ["ok", 1]}', ["body.tags.1"]),
    "tag-nested-100-deep": (
        b'{"title": "x", "tags": [' + b"[" * 99 + b"]" * 99 + b"]}",
        ["body.tags.0"],
    ),
    "unknown-proto": (b'{"title": "x", "__proto__": {"admin": true}}', ["body.__proto__"]),
    "unknown-empty-key": (b'{"title": "x", "": 1}', ["body."]),
    "unknown-10k-key": (
        b'{"title": "x", "' + b"k" * 10_000 + b'": 1}',
        ["body." + "k" * 195],  # cut to the contract's 200 characters (impl/http/errors.py)
    ),
}

# Out-of-range and not-RFC-3339 dates (the contract: `format: date-time`, "RFC 3339 with offset").
INVALID_DATES = {
    "year-0": "0000-01-01T00:00:00Z",
    "year-10000": "10000-01-01T00:00:00Z",
    "month-13-day-45": "2026-13-45T00:00:00Z",
    "february-30": "2026-02-30T00:00:00Z",
    "hour-24": "2026-12-01T24:00:00Z",
    "offset-25h": "2026-01-01T00:00:00+25:00",
    "date-only": "2026-12-01",
    "no-seconds": "2026-12-01T10:00Z",
    "space-separator": "2026-12-01 10:00:00Z",
    "expanded-year": "+002026-12-01T00:00:00Z",
    "empty": "",
}
for _name, _value in INVALID_DATES.items():
    INVALID_FIELDS[f"due-date-{_name}"] = (
        json.dumps({"title": "x", "due_date": _value}).encode(),
        ["body.due_date"],
    )


@pytest.mark.parametrize("method", WRITE_METHODS)
@pytest.mark.parametrize(
    ("body", "fields"), list(INVALID_FIELDS.values()), ids=list(INVALID_FIELDS)
)
async def test_invalid_field_is_422_naming_it(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    task: dict[str, Any],
    method: str,
    body: bytes,
    fields: list[str],
) -> None:
    response = await unchanged(
        db,
        client.request(
            method,
            url_for(method, task),
            content=body,
            headers={**json_headers(alice), "Idempotency-Key": f"hostile-{uuid.uuid4()}"}
            if method == "POST"
            else json_headers(alice),
        ),
    )
    assert_error(response, 422, "VALIDATION_ERROR", fields)


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_wrongly_cased_key_is_unknown_and_title_is_missing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    task: dict[str, Any],
    method: str,
) -> None:
    response = await unchanged(
        db,
        client.request(
            method, url_for(method, task), content=b'{"Title": "x"}', headers=json_headers(alice)
        ),
    )
    assert_error(response, 422, "VALIDATION_ERROR", ["body.Title", "body.title"])


LONE_SURROGATES = {
    "high-in-title": (b'{"title": "\\ud800"}', ["body.title"]),
    "low-in-title": (b'{"title": "a\\udc00b"}', ["body.title"]),
    "reversed-pair": (b'{"title": "\\ude80\\ud83d"}', ["body.title"]),
    "in-description": (b'{"title": "x", "description": "\\udfff"}', ["body.description"]),
    "in-tag": (b'{"title": "x", "tags": ["\\ud800"]}', ["body.tags.0"]),
    "in-key": (b'{"title": "x", "\\ud800": 1}', ["body"]),
}


@pytest.mark.parametrize("method", WRITE_METHODS)
@pytest.mark.parametrize(
    ("body", "fields"), list(LONE_SURROGATES.values()), ids=list(LONE_SURROGATES)
)
async def test_lone_surrogate_escape_is_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    task: dict[str, Any],
    method: str,
    body: bytes,
    fields: list[str],
) -> None:
    """"\\ud800" is grammatical JSON but no Unicode text, and PostgreSQL cannot store it."""
    response = await unchanged(
        db,
        client.request(method, url_for(method, task), content=body, headers=json_headers(alice)),
    )
    assert_unparseable_or_invalid(response, fields)


# ---------------------------------------------------------------------------------------------
# Accepted: what the contract allows must not be refused, and must be stored exactly

CONTROL_TEXT = {
    "u0001": "\u0001",
    "u001f": "\u001f",
    "u007f": "\u007f",
    "mixed": "a\u0001b\u001fc\u007fd\u0008e\u001bf",
    "around-words": "\u0001Buy milk\u007f",
}


@pytest.mark.parametrize("text", list(CONTROL_TEXT.values()), ids=list(CONTROL_TEXT))
async def test_control_characters_other_than_nul_are_stored_exactly(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, text: str
) -> None:
    """The contract's patterns refuse only NUL (and an all-`\\s` title; JSON Schema's `\\s` does
    not include U+0001..U+001F or U+007F), so these are valid titles, descriptions and tags."""
    response = await client.post(
        TASKS, json={"title": text, "description": text, "tags": [text]}, headers=alice.headers
    )
    assert response.status_code == 201, response.text
    created = response.json()["data"]
    assert (created["title"], created["description"], created["tags"]) == (text, text, [text])
    row = await db.fetchrow(
        "SELECT title, description, tags::text[] AS tags FROM tasks WHERE id = $1",
        uuid.UUID(created["id"]),
    )
    assert (row["title"], row["description"], list(row["tags"])) == (text, text, [text])
    fetched = (await client.get(f"{TASKS}/{created['id']}", headers=alice.headers)).json()["data"]
    assert (fetched["title"], fetched["description"], fetched["tags"]) == (text, text, [text])
    found = await client.get(TASKS, params={"tag": text}, headers=alice.headers)
    assert [t["id"] for t in found.json()["data"]] == [created["id"]]
    # q searches words (runs of letters and digits): control characters only separate them.
    searched = await client.get(TASKS, params={"q": text}, headers=alice.headers)
    has_words = any(char.isalnum() for char in text)
    assert [t["id"] for t in searched.json()["data"]] == ([created["id"]] if has_words else [])


async def test_raw_del_byte_is_valid_json_and_stored_exactly(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, task: dict[str, Any]
) -> None:
    """RFC 8259 requires escaping only U+0000..U+001F: a raw 0x7F inside a string is valid."""
    response = await client.patch(
        f"{TASKS}/{task['id']}", content=b'{"title": "a\x7fb"}', headers=json_headers(alice)
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["title"] == "a\x7fb"
    assert await db.fetchval("SELECT title FROM tasks WHERE id = $1", uuid.UUID(task["id"])) == (
        "a\x7fb"
    )


async def test_lengths_count_code_points_not_bytes_or_utf16_units(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    """maxLength counts characters: 255 rockets (1,020 UTF-8 bytes, 510 UTF-16 units, sent as
    escaped surrogate pairs) are a valid title, and 2,000 a valid description; one more is not."""
    rocket = b"\\ud83d\\ude80"
    body = b'{"title": "' + rocket * 255 + b'", "description": "' + rocket * 2000 + b'"}'
    response = await client.post(TASKS, content=body, headers=json_headers(alice))
    assert response.status_code == 201, response.text
    lengths = await db.fetchrow(
        "SELECT char_length(title) AS t, char_length(description) AS d FROM tasks WHERE id = $1",
        uuid.UUID(response.json()["data"]["id"]),
    )
    assert (lengths["t"], lengths["d"]) == (255, 2000)
    for too_long, field in (
        (b'{"title": "' + rocket * 256 + b'"}', "body.title"),
        (b'{"title": "x", "description": "' + rocket * 2001 + b'"}', "body.description"),
    ):
        refused = await unchanged(
            db, client.post(TASKS, content=too_long, headers=json_headers(alice))
        )
        assert_error(refused, 422, "VALIDATION_ERROR", [field])


async def test_lower_case_t_and_z_are_rfc3339(
    client: httpx.AsyncClient, alice: User
) -> None:
    """RFC 3339 section 5.6 allows "t" and "z" in lower case."""
    response = await client.post(
        TASKS, json={"title": "x", "due_date": "2026-12-01t10:00:00z"}, headers=alice.headers
    )
    assert response.status_code == 201, response.text
    assert datetime.fromisoformat(response.json()["data"]["due_date"]) == datetime.fromisoformat(
        "2026-12-01T10:00:00+00:00"
    )


@pytest.mark.parametrize("instant", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"])
async def test_extreme_but_valid_due_date_round_trips_or_is_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, instant: str
) -> None:
    response = await client.post(
        TASKS, json={"title": "Edge of time", "due_date": instant}, headers=alice.headers
    )
    if response.status_code == 422:
        assert_error(response, 422, "VALIDATION_ERROR", ["body.due_date"])
        return
    assert response.status_code == 201, response.text
    task_id = response.json()["data"]["id"]
    fetched = (await client.get(f"{TASKS}/{task_id}", headers=alice.headers)).json()["data"]
    due = datetime.fromisoformat(fetched["due_date"])
    assert due.utcoffset() is not None, f"no offset: {fetched['due_date']}"
    assert due == datetime.fromisoformat(instant)
    stored = await db.fetchval(
        "SELECT isfinite(due_date) FROM tasks WHERE id = $1", uuid.UUID(task_id)
    )
    assert stored is True, "stored as an infinity"


# ---------------------------------------------------------------------------------------------
# 413 at a configured limit; 10 MB bodies


def json_body_of_size(size: int) -> bytes:
    """A valid TaskWrite of exactly `size` bytes, padded with JSON whitespace."""
    base = b'{"title": "Boundary"}'
    return base[:-1] + b" " * (size - len(base)) + b"}"


async def _chunks(body: bytes, size: int = 512) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.fixture(scope="module")
def small_limit_url(database_url: str) -> Any:
    with running_server(settings(database_url, max_body_bytes=SMALL_LIMIT)) as url:
        yield url


@pytest.fixture(scope="module")
async def small(small_limit_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the second server, whose max_body_bytes is 2048."""
    hooks = {"response": [_refuse_5xx]}
    async with httpx.AsyncClient(base_url=small_limit_url, timeout=30, event_hooks=hooks) as http:
        yield http


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_configured_limit_accepts_exactly_the_limit(
    small: httpx.AsyncClient, db: asyncpg.Connection, alice: User, chunked: bool
) -> None:
    body = json_body_of_size(SMALL_LIMIT)
    content = _chunks(body) if chunked else body
    response = await small.post(TASKS, content=content, headers=json_headers(alice))
    assert response.status_code == 201, response.text
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1", alice.id) == 1


@pytest.mark.parametrize("method", WRITE_METHODS)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_configured_limit_refuses_one_byte_more_with_413(
    small: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    task: dict[str, Any],
    method: str,
    chunked: bool,
) -> None:
    body = json_body_of_size(SMALL_LIMIT + 1)
    content = _chunks(body) if chunked else body
    response = await unchanged(
        db,
        small.request(method, url_for(method, task), content=content, headers=json_headers(alice)),
    )
    error = assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert str(SMALL_LIMIT) in error["message"]


async def test_the_limit_is_per_server(
    client: httpx.AsyncClient, small: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    """The body the 2048-byte server refuses is accepted by the default (64 KiB) server."""
    body = json_body_of_size(3000)
    refused = await unchanged(db, small.post(TASKS, content=body, headers=json_headers(alice)))
    assert_error(refused, 413, "PAYLOAD_TOO_LARGE")
    accepted = await client.post(TASKS, content=body, headers=json_headers(alice))
    assert accepted.status_code == 201, accepted.text


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("application/json", b'{"title": ' + b"[" * 3000, 413, "PAYLOAD_TOO_LARGE"),
        ("text/plain", json_body_of_size(3000), 415, "UNSUPPORTED_MEDIA_TYPE"),
    ],
    ids=["oversized-and-malformed-is-413", "oversized-and-not-json-is-415"],
)
async def test_guard_order_media_type_then_size_then_syntax(
    small: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    content_type: str,
    body: bytes,
    status: int,
    code: str,
) -> None:
    response = await unchanged(
        db, small.post(TASKS, content=body, headers=json_headers(alice, content_type))
    )
    assert_error(response, status, code)


@pytest.mark.parametrize("method", WRITE_METHODS)
async def test_ten_megabyte_string_is_413(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    task: dict[str, Any],
    method: str,
) -> None:
    body = b'{"title": "x", "description": "' + b"x" * 10_000_000 + b'"}'
    response = await unchanged(
        db,
        client.request(method, url_for(method, task), content=body, headers=json_headers(alice)),
    )
    error = assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert str(DEFAULT_LIMIT) in error["message"]


# ---------------------------------------------------------------------------------------------
# Raw HTTP: a Content-Length that lies, and requests that are not HTTP/1.1 at all


async def raw_request(base_url: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Writes `data` on a fresh connection; returns status, headers and body of the answer."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
        return status, headers, body
    finally:
        writer.close()


def raw_post(user: User, *header_lines: bytes, body: bytes = b"{}") -> bytes:
    head = [
        b"POST /api/tasks HTTP/1.1",
        b"Host: test",
        b"Authorization: " + user.headers["Authorization"].encode(),
        b"Content-Type: application/json",
        *header_lines,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def test_declared_length_over_the_limit_is_413_before_the_body_arrives(
    base_url: str, db: asyncpg.Connection, alice: User
) -> None:
    """Content-Length says 1 GB, 2 bytes follow: the guard answers from the header alone."""
    request = raw_request(base_url, raw_post(alice, b"Content-Length: 1000000000"))
    status, headers, body = await unchanged(db, request)
    assert status == 413
    envelope = json.loads(body)
    assert envelope["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert envelope["meta"]["request_id"] == headers["x-request-id"]


PROTOCOL_ERRORS = {
    "content-length-overflow": lambda u: raw_post(u, b"Content-Length: 99999999999999999999999"),
    "content-length-negative": lambda u: raw_post(u, b"Content-Length: -1"),
    "content-length-not-a-number": lambda u: raw_post(u, b"Content-Length: two"),
    "content-length-conflicting": lambda u: raw_post(
        u, b"Content-Length: 2", b"Content-Length: 14", body=b'{"title": "x"}'
    ),
    "content-length-and-chunked": lambda u: raw_post(
        u, b"Transfer-Encoding: chunked", b"Content-Length: 14", body=b'{"title": "x"}'
    ),
    "del-in-idempotency-key": lambda u: raw_post(
        u, b"Idempotency-Key: a\x7fb", b"Content-Length: 14", body=b'{"title": "x"}'
    ),
    "raw-0xff-in-target": lambda u: (
        b"GET /api/tasks?q=\xff HTTP/1.1\r\nHost: test\r\nAuthorization: "
        + u.headers["Authorization"].encode()
        + b"\r\n\r\n"
    ),
}


@pytest.mark.parametrize("build", list(PROTOCOL_ERRORS.values()), ids=list(PROTOCOL_ERRORS))
async def test_invalid_http_is_refused_by_uvicorn_with_400(
    base_url: str, db: asyncpg.Connection, alice: User, build: Any
) -> None:
    """These never reach the app: uvicorn's parser answers a plain-text 400 (no envelope)."""
    status, _, body = await unchanged(db, raw_request(base_url, build(alice)))
    assert status == 400, body
    assert b"Traceback" not in body


# ---------------------------------------------------------------------------------------------
# Content types


@pytest.mark.parametrize(
    "content_type",
    ["application/json, text/plain", "application/*", "*/*", "json", "text/json",
     "application/x-json", "multipart/form-data; boundary=x", ";", "application/json\\"],
)
async def test_content_types_that_are_not_json_are_415(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    content_type: str,
) -> None:
    response = await unchanged(
        db,
        client.post(TASKS, content=b'{"title": "x"}', headers=json_headers(alice, content_type)),
    )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize(
    "content_type",
    ["APPLICATION/JSON", "application/json; charset=\"utf-8\"", "application/vnd.api+json"],
)
async def test_json_media_types_in_other_spellings_are_accepted(
    client: httpx.AsyncClient, alice: User, content_type: str
) -> None:
    response = await client.post(
        TASKS, content=b'{"title": "x"}', headers=json_headers(alice, content_type)
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "order",
    [
        pytest.param(
            ("text/plain", "application/json"),
            id="text-then-json",
        ),
        pytest.param(("application/json", "text/plain"), id="json-then-text"),
    ],
)
async def test_two_content_type_lines_are_415(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, order: tuple[str, str]
) -> None:
    """Content-Type is a singleton field; two lines combine to "a, b", which is not JSON."""
    headers = [("Authorization", alice.headers["Authorization"])]
    headers += [("Content-Type", value) for value in order]
    response = await unchanged(db, client.post(TASKS, content=b'{"title": "x"}', headers=headers))
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


# ---------------------------------------------------------------------------------------------
# Query parameters: repetition, overflow, dates, cursors


async def test_repeated_limit_takes_one_value(client: httpx.AsyncClient, alice: User) -> None:
    for _ in range(3):
        assert (await client.post(TASKS, json={"title": "t"}, headers=alice.headers)).is_success
    cases = (("limit=1&limit=2", 2), ("limit=2&limit=1", 1), ("limit=abc&limit=2", 2))
    for query, expected in cases:
        response = await client.get(f"{TASKS}?{query}", headers=alice.headers)
        assert response.status_code == 200, (query, response.text)
        body = response.json()
        assert body["meta"]["limit"] == expected  # FastAPI: the last value wins
        assert len(body["data"]) == expected and body["meta"]["total"] == 3
    response = await client.get(f"{TASKS}?limit=2&limit=abc", headers=alice.headers)
    assert_error(response, 422, "VALIDATION_ERROR", ["query.limit"])


async def test_repeated_status_is_consistent_with_one_value(
    client: httpx.AsyncClient, alice: User
) -> None:
    await client.post(TASKS, json={"title": "open"}, headers=alice.headers)
    await client.post(TASKS, json={"title": "done", "completed": True}, headers=alice.headers)
    for first, last in (("pending", "completed"), ("completed", "pending")):
        response = await client.get(f"{TASKS}?status={first}&status={last}", headers=alice.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert [t["completed"] for t in body["data"]] == [last == "completed"]
        assert body["meta"]["total"] == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=99999999999999999999", "query.limit"),
        ("limit=-99999999999999999999", "query.limit"),
        ("limit=1e3", "query.limit"),
        ("limit=0x10", "query.limit"),
        ("limit=NaN", "query.limit"),
        ("limit=Infinity", "query.limit"),
        ("limit=%EF%BC%91", "query.limit"),  # FULLWIDTH DIGIT ONE
        ("limit=%00", "query.limit"),
        ("limit=", "query.limit"),
        ("due_before=0000-01-01T00:00:00Z", "query.due_before"),
        ("due_before=10000-01-01T00:00:00Z", "query.due_before"),
        ("due_before=2026-13-45T00:00:00Z", "query.due_before"),
        ("due_before=2026-02-30T00:00:00Z", "query.due_before"),
        ("due_before=1700000000", "query.due_before"),
        ("due_after=2026-12-01T00:00:00", "query.due_after"),
        ("due_after=9999-12-31T23:59:59-14:00", "query.due_after"),
        ("due_after=2026-12-01T00:00:00%2B25:00", "query.due_after"),
        ("status=pending%00", "query.status"),
        ("sort=title%3B%20DROP%20TABLE%20tasks", "query.sort"),
        ("priority=HIGH", "query.priority"),
        ("q=" + "x" * 201, "query.q"),
        ("q=a%00b", "query.q"),
        ("tag=%20%20", "query.tag"),
        ("tag=" + "t" * 33, "query.tag"),
    ],
)
async def test_invalid_query_value_is_422_naming_it(
    client: httpx.AsyncClient, alice: User, query: str, field: str
) -> None:
    response = await client.get(f"{TASKS}?{query}", headers=alice.headers)
    assert_error(response, 422, "VALIDATION_ERROR", [field])


def _forged_cursor() -> str:
    """Well-formed base64 of a plausible payload with an all-zero MAC."""
    payload = json.dumps(["2026-01-01 00:00:00+00", str(uuid.uuid4())]).encode()
    return base64.urlsafe_b64encode(payload + b"\0" * 16).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "a b",
        "\u00e9t\u00e9",
        "\u0001",
        "A" * 1025,  # over the contract's maxLength
        "A" * 1024,  # at maxLength, not a cursor
        "-" * 40,
        "_" * 40,
        "AAAAAAAAAAAAAAAAAAAA",  # decodes to fewer bytes than a MAC
        _forged_cursor(),
    ],
    ids=["bangs", "space", "non-ascii", "control", "1025-chars", "1024-chars", "dashes",
         "underscores", "shorter-than-mac", "forged-mac"],
)
async def test_garbage_cursor_is_422_on_query_cursor(
    client: httpx.AsyncClient, alice: User, cursor: str
) -> None:
    response = await client.get(TASKS, params={"cursor": cursor}, headers=alice.headers)
    assert_error(response, 422, "VALIDATION_ERROR", ["query.cursor"])


async def test_unknown_query_parameters_are_ignored(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.get(
        f"{TASKS}?user_id={uuid.uuid4()}&%00=1&%FF=%FF&limit=5", headers=alice.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["meta"]["limit"] == 5


# ---------------------------------------------------------------------------------------------
# q: SQL, LIKE and text-search metacharacters are no operators: q is words (runs of letters and
# digits), each the beginning of a word of the title or description

SEARCHABLE = [
    "Back\\slash",
    "snake_case and 50%",
    "it's mine",
    'say "hi"',
    "a;b -- c",
    "'; DROP TABLE tasks; --",
    "naïve café 🚀",
    "percent %_ mix",
    "plain",
]


@pytest.mark.parametrize(
    "q",
    ["\\", "\\%", "\\_", "%_", "_%", "'", "''", '"', ";", "--", "'; DROP TABLE tasks; --",
     "' OR '1'='1", "%' OR 1=1 --", "🚀", "café", "*", ".*", "[a-z]", "$1", "{}", "%25",
     "\u0001", "x" * 200],
)
async def test_q_metacharacters_are_no_operators(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, q: str
) -> None:
    for title in SEARCHABLE:
        assert (await client.post(TASKS, json={"title": title}, headers=alice.headers)).is_success
    response = await unchanged(db, client.get(TASKS, params={"q": q}, headers=alice.headers))
    assert response.status_code == 200, response.text

    def words(text: str) -> list[str]:
        return re.findall(r"[^\W_]+", text.lower())

    expected = {
        title for title in SEARCHABLE
        if words(q) and all(any(w.startswith(p) for w in words(title)) for p in words(q))
    }
    assert {task["title"] for task in response.json()["data"]} == expected
    assert response.json()["meta"]["total"] == len(expected)


@pytest.mark.parametrize("tag", ["%", "_", "'", "a'b", "\\", "🚀", "{a,b}", "NULL"])
async def test_tag_filter_is_exact_with_metacharacters(
    client: httpx.AsyncClient, alice: User, tag: str
) -> None:
    """Tags go into an array literal: braces, commas, quotes and NULL must stay one tag."""
    wanted = await client.post(TASKS, json={"title": "t", "tags": [tag]}, headers=alice.headers)
    assert wanted.status_code == 201, wanted.text
    assert wanted.json()["data"]["tags"] == [tag]
    await client.post(TASKS, json={"title": "other", "tags": ["a", "b"]}, headers=alice.headers)
    response = await client.get(TASKS, params={"tag": tag}, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert [t["id"] for t in response.json()["data"]] == [wanted.json()["data"]["id"]]


# ---------------------------------------------------------------------------------------------
# task_id in the path

BAD_TASK_IDS = {
    "nul": "%00",
    "nul-inside": "6f1c2a3e-8a53-4c8e-9d2f-1f6a9f5b%007c01",
    "5000-chars": "a" * 5000,
    "0xff": "%FF",
    "utf8-surrogate": "%ED%A0%80",
    "leading-space": "%206f1c2a3e-8a53-4c8e-9d2f-1f6a9f5b7c01",
    "sql": "1'%20OR%20'1'='1",
    "one-digit-too-many": "6f1c2a3e-8a53-4c8e-9d2f-1f6a9f5b7c011",
    "non-hex": "6f1c2a3e-8a53-4c8e-9d2f-1f6a9f5b7c0g",
}


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("task_id", list(BAD_TASK_IDS.values()), ids=list(BAD_TASK_IDS))
async def test_invalid_task_id_is_422_on_path_task_id(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, method: str, task_id: str
) -> None:
    kwargs: dict[str, Any] = {"json": {"title": "x"}} if method in ("PUT", "PATCH") else {}
    response = await unchanged(
        db, client.request(method, f"{TASKS}/{task_id}", headers=alice.headers, **kwargs)
    )
    assert_error(response, 422, "VALIDATION_ERROR", ["path.task_id"])


@pytest.mark.parametrize(
    "task_id", ["00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"]
)
async def test_nil_and_max_uuid_are_404(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, task_id: str
) -> None:
    response = await unchanged(db, client.delete(f"{TASKS}/{task_id}", headers=alice.headers))
    assert_error(response, 404, "NOT_FOUND")


async def test_upper_case_uuid_is_the_same_task(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, task: dict[str, Any]
) -> None:
    url = f"{TASKS}/{task['id'].upper()}"
    fetched = await client.get(url, headers=alice.headers)
    assert fetched.status_code == 200 and fetched.json()["data"]["id"] == task["id"]
    patched = await client.patch(url, json={"title": "Upper"}, headers=alice.headers)
    assert patched.status_code == 200 and patched.json()["data"]["title"] == "Upper"
    assert (await client.delete(url, headers=alice.headers)).status_code == 204
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE id = $1", uuid.UUID(task["id"])) == 0


@pytest.mark.parametrize(
    "spelling",
    [lambda i: "{" + i + "}", lambda i: i.replace("-", ""), lambda i: "urn:uuid:" + i],
    ids=["braces", "no-dashes", "urn"],
)
async def test_other_uuid_spellings_find_the_same_task_or_are_422(
    client: httpx.AsyncClient, alice: User, bob: User, task: dict[str, Any], spelling: Any
) -> None:
    url = f"{TASKS}/{spelling(task['id'])}"
    response = await client.get(url, headers=alice.headers)
    if response.status_code == 422:
        assert_error(response, 422, "VALIDATION_ERROR", ["path.task_id"])
        return
    assert response.status_code == 200 and response.json()["data"]["id"] == task["id"]
    assert_error(await client.get(url, headers=bob.headers), 403, "FORBIDDEN")


# ---------------------------------------------------------------------------------------------
# Headers: oversized tokens, If-Match, Idempotency-Key, repeated headers


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + "a" * 100_000,
        "Bearer eyJhbGciOiJIUzI1NiJ9." + "e" * 100_000 + ".sig",
        "Bearer " + "a" * 1_000_000,
        b"Bearer \xff\xfe\x80",
    ],
    ids=["100kb-garbage", "100kb-jwt-shaped", "1mb-garbage", "non-ascii"],
)
async def test_hostile_authorization_is_401(
    client: httpx.AsyncClient, db: asyncpg.Connection, authorization: Any
) -> None:
    """No 431 and no dropped connection: uvicorn passes the header on, the app answers 401."""
    response = await unchanged(
        db,
        client.post(
            TASKS,
            json={"title": "x"},
            headers={"Authorization": authorization},
        ),
    )
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"].startswith("Bearer")


IF_MATCH_NAMING_NO_VERSION = {
    "20-digits": '"99999999999999999999"',
    "2-pow-31": '"2147483648"',
    "2-pow-32-plus-1": '"4294967297"',  # would be version 1 if truncated to 32 bits
    "negative": '"-1"',
    "plus-sign": '"+1"',
    "zero": '"0"',
    "hex": '"0x1"',
    "decimal": '"1.0"',
    "leading-zero": '"01"',
    "ten-digit-zero-padded": '"0000000001"',
}


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "if_match",
    [
        pytest.param(
            value,
            id=name,
        )
        for name, value in IF_MATCH_NAMING_NO_VERSION.items()
    ],
)
async def test_if_match_naming_no_version_is_412(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    task: dict[str, Any],
    method: str,
    if_match: str,
) -> None:
    kwargs: dict[str, Any] = {"json": {"title": "Changed"}} if method != "DELETE" else {}
    response = await unchanged(
        db,
        client.request(
            method,
            f"{TASKS}/{task['id']}",
            headers={**alice.headers, "If-Match": if_match},
            **kwargs,
        ),
    )
    assert_error(response, 412, "PRECONDITION_FAILED")


# Not `*` and not a list of entity tags (RFC 9110): the header is malformed, not stale.
IF_MATCH_MALFORMED = {
    "unquoted-version": "1",
    "unquoted-list": "1, 2",
    "only-commas": ",,,",
    "unclosed-quote": '"1',
    "tags-without-comma": '"1""2"',
    "trailing-word": '"1" then',
    "star-in-a-list": '*, "1"',
}


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "if_match", [pytest.param(v, id=name) for name, v in IF_MATCH_MALFORMED.items()]
)
async def test_malformed_if_match_is_422_saying_so_not_412(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    task: dict[str, Any],
    method: str,
    if_match: str,
) -> None:
    """`If-Match: 1` once answered 412 "The task has changed", though the task (at version 1)
    had not: a bare version is refused as malformed, and the message says what to send."""
    kwargs: dict[str, Any] = {"json": {"title": "Changed"}} if method != "DELETE" else {}
    response = await unchanged(
        db,
        client.request(
            method,
            f"{TASKS}/{task['id']}",
            headers={**alice.headers, "If-Match": if_match},
            **kwargs,
        ),
    )
    error = assert_error(response, 422, "VALIDATION_ERROR", ["header.If-Match"])
    assert 'quotes included ("3")' in error["details"][0]["message"]


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_if_match_over_64_characters_is_422(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    task: dict[str, Any],
    method: str,
) -> None:
    kwargs: dict[str, Any] = {"json": {"title": "Changed"}} if method != "DELETE" else {}
    response = await unchanged(
        db,
        client.request(
            method,
            f"{TASKS}/{task['id']}",
            headers={**alice.headers, "If-Match": '"' + "9" * 100 + '"'},
            **kwargs,
        ),
    )
    assert_error(response, 422, "VALIDATION_ERROR", ["header.If-Match"])


@pytest.mark.parametrize(
    "key",
    ["é".encode(), b"\xff", b"\xa0nbsp", "a\tb", "x" * 256, ""],
    ids=["utf8-e-acute", "latin1-0xff", "nbsp", "tab", "256-chars", "empty"],
)
async def test_invalid_idempotency_key_is_422_and_stores_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, key: Any
) -> None:
    response = await unchanged(
        db,
        client.post(
            TASKS,
            json={"title": "x"},
            headers={**alice.headers, "Idempotency-Key": key},
        ),
    )
    assert_error(response, 422, "VALIDATION_ERROR", ["header.Idempotency-Key"])


async def test_idempotency_key_at_its_limits_is_accepted(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    """The pattern's bounds are 0x21 (!) and 0x7E (~); 255 characters is the maximum."""
    key = "!" + "~" * 253 + "'"
    for _ in range(2):
        response = await client.post(
            TASKS, json={"title": "x"}, headers={**alice.headers, "Idempotency-Key": key}
        )
        assert response.status_code == 201, response.text
    stored = await db.fetch("SELECT key FROM idempotency_keys WHERE user_id = $1", alice.id)
    assert [row["key"] for row in stored] == [key]
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1", alice.id) == 1


async def test_two_idempotency_key_lines_store_at_most_one_key(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    headers = [("Authorization", alice.headers["Authorization"])]
    headers += [("Idempotency-Key", "first"), ("Idempotency-Key", "second")]
    response = await client.post(TASKS, json={"title": "x"}, headers=headers)
    keys = [r["key"] for r in await db.fetch(
        "SELECT key FROM idempotency_keys WHERE user_id = $1", alice.id
    )]
    if response.status_code == 422:
        assert_error(response, 422, "VALIDATION_ERROR", ["header.Idempotency-Key"])
        assert keys == []
        return
    assert response.status_code == 201, response.text
    assert len(keys) == 1 and keys[0] in ("first", "second")
    retry = await client.post(TASKS, json={"title": "x"}, headers=headers)
    assert retry.json()["data"]["id"] == response.json()["data"]["id"]
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1", alice.id) == 1


async def test_two_if_match_lines_never_write_a_stale_version(
    client: httpx.AsyncClient, db: asyncpg.Connection, alice: User, task: dict[str, Any]
) -> None:
    """Either the lines combine ("9", "1" matches version 1: 200) or one is used; a stale-only
    pair is always 412."""
    url = f"{TASKS}/{task['id']}"
    auth = ("Authorization", alice.headers["Authorization"])
    stale = [auth, ("If-Match", '"8"'), ("If-Match", '"9"')]
    response = await unchanged(db, client.patch(url, json={"title": "Changed"}, headers=stale))
    assert_error(response, 412, "PRECONDITION_FAILED")
    mixed = [auth, ("If-Match", '"9"'), ("If-Match", '"1"')]
    before = await snapshot(db)
    response = await client.patch(url, json={"title": "Changed"}, headers=mixed)
    if response.status_code == 412:
        assert_error(response, 412, "PRECONDITION_FAILED")
        assert await snapshot(db) == before
    else:
        assert response.status_code == 200, response.text
        assert response.json()["data"]["title"] == "Changed"


async def test_two_authorization_lines_never_mix_users(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    await client.post(TASKS, json={"title": "alice's"}, headers=alice.headers)
    await client.post(TASKS, json={"title": "bob's"}, headers=bob.headers)
    for first, second in ((alice, bob), (bob, alice)):
        headers = [
            ("Authorization", first.headers["Authorization"]),
            ("Authorization", second.headers["Authorization"]),
        ]
        response = await client.get(TASKS, headers=headers)
        if response.status_code != 200:
            assert_error(response, 401, "UNAUTHORIZED")
            continue
        owners = {task["user_id"] for task in response.json()["data"]}
        assert owners in ({str(alice.id)}, {str(bob.id)})
