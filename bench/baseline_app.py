"""The benchmark's yardstick: a minimal Starlette app on raw asyncpg + orjson + PyJWT.

It does the same work as the real API for the five benchmarked routes, and nothing the real API
could not also do:

- the same HS256 bearer check (PyJWT, `sub` and `exp` required, 30 s leeway, `sub` a user id
  of 1-255 characters without control characters, tokens over 8 KiB refused);
- the same SQL text as impl/tasks/store.py and impl/tasks/list_sql.py (bench/sql.py imports it): same
  columns, casts and ORDER BY, the list's page (LIMIT n+1) and total in one statement, the same
  INSERT (under the same per-user task quota, MAX_TASKS_PER_USER as the API reads it: the
  statement that takes the user's counter row lock first), UPDATE and DELETE, one pooled
  connection per
  operation and, like the API, no reset query when it goes back to the pool;
- the same envelope: {data, meta{timestamp, request_id, ...}}, with total, limit and an
  sealed next_cursor on lists, an ETag on single tasks, Location on 201, X-Request-ID on
  every response;
- the body checks the contract requires (JSON media type, size limit, JSON object, no unknown
  fields, types, lengths, blank titles, NUL characters, priority enum, RFC 3339 due dates, tag
  count and length; duplicate tags merged), with simple hand-written checks instead of Pydantic.

What it leaves out is the framework: no FastAPI dependency injection, no Pydantic models for
parameters or bodies, no middleware stack, no per-request log record. Only the benchmarked
routes exist (plus /api/health), only the default sort, and the list takes only `status` and
`limit`.

Run: DATABASE_URL=... BETTER_AUTH_SECRET=... uvicorn bench.baseline_app:app --port 8001
"""

from __future__ import annotations

import gc
import hashlib
import os
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import jwt
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench import ceiling
from bench.sql import (
    CASTS,
    COLUMNS,
    DELETE_SQL,
    DIAGNOSE_SQL,
    GET_SQL,
    INSERT_SQL,
    LIST_SQL,
    QUOTA_INSERT_SQL,
    SORT_KEYS,
    TASK_FIELDS,
    WRITABLE,
)
from impl.platform.database import set_codecs  # jsonb as the API reads it (reminders)
from impl.platform.sealed import Sealer
from impl.platform.settings import Settings
from impl.tasks.cursor import PURPOSE as CURSOR_PURPOSE

SECRET = os.environ["BETTER_AUTH_SECRET"]
DATABASE_URL = os.environ["DATABASE_URL"]
CURSOR_SECRET = hashlib.sha256(b"task-api cursor\0" + SECRET.encode()).digest()
CURSORS = Sealer(CURSOR_SECRET, CURSOR_PURPOSE)
MAX_BODY_BYTES = 65536
# The API's per-user task quota, as it reads it (impl/platform/settings.py; 0: none): the quota
# decides which INSERT the API sends, so the baseline sends the same one.
MAX_TASKS_PER_USER = int(os.environ.get("MAX_TASKS_PER_USER")
                         or Settings.model_fields["max_tasks_per_user"].default)
MAX_TOKEN_BYTES = 8192
# The table it writes: `tasks` (the API's), or with BASELINE_TABLE=ceiling_tasks the plain table
# of bench/ceiling.py, the same rows with nothing else to keep: the write ceiling. There the
# statements are the same text on the other table, without what the schema asks of a writer
# (the quota's counter row, the change feed's stamp).
TABLE = os.environ.get(ceiling.ENV) or "tasks"
CEILING = TABLE == ceiling.TABLE
if TABLE not in ("tasks", ceiling.TABLE):
    raise SystemExit(f"{ceiling.ENV} must be tasks or {ceiling.TABLE}, not {TABLE!r}")


def _on_table(sql: str) -> str:
    return sql.replace(" tasks ", f" {TABLE} ", 1)


GET_ON_TABLE, INSERT_ON_TABLE = _on_table(GET_SQL), _on_table(INSERT_SQL)
DELETE_ON_TABLE, DIAGNOSE_ON_TABLE = _on_table(DELETE_SQL), _on_table(DIAGNOSE_SQL)
STAMP = "" if CEILING else ", change_xid = pg_current_xact_id()"
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
PRIORITIES = ("low", "medium", "high")
DEFAULTS: dict[str, Any] = {"completed": False, "priority": "medium", "tags": [], "reminders": []}

pool: asyncpg.Pool | None = None


class Connection(asyncpg.Connection):  # type: ignore[misc]
    """No reset query when a connection goes back to the pool: the API turns it off too
    (impl/platform/database.py), so both send PostgreSQL the same statements."""

    def get_reset_query(self) -> str:
        return ""


# --- envelope -------------------------------------------------------------------------------------
def _default(value: Any) -> str:
    return str(value)  # asyncpg's UUID class


def respond(payload: Any, status: int, request_id: str, headers: dict[str, str] | None = None,
            **meta: Any) -> Response:
    body = orjson.dumps(
        {**payload, "meta": {"timestamp": datetime.now(UTC), "request_id": request_id, **meta}},
        default=_default,
    )
    all_headers = {"x-request-id": request_id, **(headers or {})}
    return Response(body, status, all_headers, media_type="application/json")


class Failure(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message


def failure_response(error: Failure, request_id: str) -> Response:
    return respond({"error": {"code": error.code, "message": error.message}}, error.status,
                   request_id)


def invalid(field: str, message: str) -> Failure:
    return Failure(422, "validation_failed", f"{field}: {message}")


# --- auth -----------------------------------------------------------------------------------------
def authenticate(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Failure(401, "unauthorized", "Authorization header required")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_BYTES:
        raise Failure(401, "unauthorized", "Authorization header required")
    try:
        claims = jwt.decode(token, key=SECRET, algorithms=["HS256"], leeway=30,
                            options={"require": ["sub", "exp"]})
    except jwt.PyJWTError:
        raise Failure(401, "unauthorized", "Invalid token") from None
    subject = claims["sub"]
    if (not isinstance(subject, str) or not 1 <= len(subject) <= 255
            or any(unicodedata.category(char) in ("Cc", "Cs") for char in subject)):
        raise Failure(401, "unauthorized", "Invalid token")
    return subject


# --- body checks (the contract's TaskWrite / TaskPatch) -------------------------------------------
def _text(value: Any, field: str, low: int, high: int, not_blank: bool) -> str:
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if not low <= len(value) <= high:
        raise invalid(field, f"length must be {low}..{high}")
    if "\x00" in value or (not_blank and not value.strip()):
        raise invalid(field, "must not be blank or contain NUL")
    return value


def _instant(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise invalid(field, "must be an RFC 3339 date-time")
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC).isoformat()
    except (ValueError, OverflowError):
        raise invalid(field, "must be an RFC 3339 date-time") from None


def check_field(name: str, value: Any) -> Any:
    if name == "title":
        return _text(value, "title", 1, 255, True)
    if name == "description":
        return None if value is None else _text(value, "description", 0, 2000, False)
    if name == "completed":
        if not isinstance(value, bool):
            raise invalid("completed", "must be a boolean")
        return value
    if name == "priority":
        if value not in PRIORITIES:
            raise invalid("priority", "must be low, medium or high")
        return value
    if name == "due_date":
        return _instant(value, "due_date")
    if name == "tags":
        if not isinstance(value, list) or len(value) > 10:
            raise invalid("tags", "must be an array of at most 10 tags")
        return list(dict.fromkeys(_text(tag, "tags", 1, 32, True) for tag in value))
    raise invalid(name, "unknown field")


async def json_object(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise Failure(415, "unsupported_media_type", "Content-Type must be application/json")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise Failure(413, "payload_too_large", "Request body too large")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Failure(400, "malformed_json", "Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    return body


def task_id_of(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["task_id"])
    except ValueError:
        raise invalid("task_id", "must be a UUID") from None


async def diagnose(connection: asyncpg.Connection, user_id: str,
                   task_id: uuid.UUID) -> Failure:
    record = await connection.fetchrow(DIAGNOSE_ON_TABLE, task_id)
    if record is None:
        return Failure(404, "not_found", "Task not found")
    if record["user_id"] != user_id:
        return Failure(403, "forbidden", "Not your task")
    return Failure(412, "precondition_failed", "Version mismatch")


def task_response(record: asyncpg.Record, status: int, request_id: str,
                  location: bool = False) -> Response:
    task = dict(record)
    headers = {"etag": f'"{task["version"]}"'}
    if location:
        headers["location"] = f"/api/tasks/{task['id']}"
    return respond({"data": task}, status, request_id, headers)


def encode_cursor(user_id: str, row: asyncpg.Record) -> str:
    # Sealed (AES-GCM) as the API seals its cursors: the same work per page.
    payload = orjson.dumps([str(row["id"]), *(row[f"key_{name}"] for name in SORT_KEYS)])
    return CURSORS.seal(user_id, payload)


# --- routes ---------------------------------------------------------------------------------------
async def tasks_collection(request: Request) -> Response:
    request_id = str(uuid.uuid4())
    try:
        user_id = authenticate(request)
        assert pool is not None
        if request.method == "POST":
            body = await json_object(request)
            fields = {name: check_field(name, value) for name, value in body.items()}
            if "title" not in fields:
                raise invalid("title", "required")
            async with pool.acquire() as connection:
                # INSERT_SQL takes the writable fields in WRITABLE's order (date-times as text).
                values = [fields.get(name, DEFAULTS.get(name)) for name in WRITABLE]
                if MAX_TASKS_PER_USER and not CEILING:
                    record = await connection.fetchrow(QUOTA_INSERT_SQL, uuid.uuid4(), user_id,
                                                       *values, MAX_TASKS_PER_USER)
                    if record is None:
                        raise Failure(409, "quota_exceeded", "Task quota reached")
                else:
                    record = await connection.fetchrow(INSERT_ON_TABLE, uuid.uuid4(), user_id,
                                                       *values)
            return task_response(record, 201, request_id, location=True)
        status = request.query_params.get("status", "all")
        if status not in LIST_SQL:
            raise invalid("status", "must be all, pending or completed")
        try:
            limit = int(request.query_params.get("limit", "50"))
        except ValueError:
            raise invalid("limit", "must be an integer") from None
        if not 1 <= limit <= 100:
            raise invalid("limit", "must be 1..100")
        async with pool.acquire() as connection:
            records = await connection.fetch(LIST_SQL[status], user_id, limit + 1)
        total = records[0]["total"]
        found = [record for record in records if record["id"] is not None]
        rows = [dict(zip(TASK_FIELDS, record, strict=False)) for record in found[:limit]]
        next_cursor = encode_cursor(user_id, found[limit - 1]) if len(found) > limit else None
        # `status` alone: the total comes from the counters, always exact.
        return respond({"data": rows}, 200, request_id, total=total, total_exact=True,
                       limit=limit, next_cursor=next_cursor)
    except Failure as error:
        return failure_response(error, request_id)


async def task_item(request: Request) -> Response:
    request_id = str(uuid.uuid4())
    try:
        user_id = authenticate(request)
        task_id = task_id_of(request)
        assert pool is not None
        if request.method == "PATCH":
            body = await json_object(request)
            changes = {}
            for name, value in body.items():
                if value is None and name not in ("description", "due_date") and name in WRITABLE:
                    raise invalid(name, "may not be null")
                changes[name] = check_field(name, value)
            args: list[Any] = [task_id, user_id, None]
            sets = []
            for name in WRITABLE:
                if name in changes:
                    args.append(changes[name])
                    sets.append(f"{name} = ${len(args)}{CASTS.get(name, '')}")
                    if name == "completed":
                        sets.append(f"completed_at = CASE WHEN ${len(args)} "
                                    "THEN COALESCE(completed_at, now()) END")
            async with pool.acquire() as connection:
                if not sets:
                    record = await connection.fetchrow(GET_ON_TABLE, task_id, user_id)
                else:
                    record = await connection.fetchrow(
                        f"UPDATE {TABLE} SET {', '.join(sets)}, version = version + 1, "
                        f"updated_at = now(){STAMP} "
                        "WHERE id = $1 AND user_id = $2 "
                        "AND ($3::int[] IS NULL OR version = ANY($3::int[])) "
                        f"RETURNING {COLUMNS}",
                        *args,
                    )
                if record is None:
                    raise await diagnose(connection, user_id, task_id)
            return task_response(record, 200, request_id)
        if request.method == "DELETE":
            async with pool.acquire() as connection:
                deleted = await connection.fetchval(DELETE_ON_TABLE, task_id, user_id, None)
                if deleted is None:
                    raise await diagnose(connection, user_id, task_id)
            return Response(status_code=204, headers={"x-request-id": request_id})
        async with pool.acquire() as connection:
            record = await connection.fetchrow(GET_ON_TABLE, task_id, user_id)
            if record is None:
                raise await diagnose(connection, user_id, task_id)
        return task_response(record, 200, request_id)
    except Failure as error:
        return failure_response(error, request_id)


async def health(request: Request) -> Response:
    return respond({"data": {"status": "ok"}}, 200, str(uuid.uuid4()))


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global pool
    # The API's connections keep generic plans (impl/platform/database.py): so do the baseline's.
    pool = await asyncpg.create_pool(DATABASE_URL, min_size=2, max_size=16, command_timeout=10,
                                     connection_class=Connection, init=set_codecs,
                                     server_settings={"plan_cache_mode": "force_generic_plan"})
    # The API freezes its start-up objects out of the garbage collector's sight (impl/app.py);
    # the baseline does the same, so neither gets an advantage the other could not take.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        await pool.close()


app = Starlette(
    routes=[
        Route("/api/health", health, methods=["GET"]),
        Route("/api/tasks", tasks_collection, methods=["GET", "POST"]),
        Route("/api/tasks/{task_id}", task_item, methods=["GET", "PATCH", "DELETE"]),
    ],
    lifespan=lifespan,
)
