"""User-scoped SQL for tasks, on asyncpg.

Every function that reads or writes tasks takes the caller's `user_id` as a required keyword
argument and filters on it: no handler can reach a row without it. Queries are hand-written SQL
(one round trip each where possible, no ORM hydration); the schema lives in models.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from impl.cursor import Position
from impl.db import Database

TASK_FIELDS = (
    "id", "user_id", "title", "description", "completed", "completed_at", "priority",
    "due_date", "tags", "created_at", "updated_at", "version",
)
COLUMNS = (
    "id, user_id, title, description, completed, completed_at, priority::text AS priority, "
    "due_date, tags::text[] AS tags, created_at, updated_at, version"
)
# meta.total without counting rows when only `status` filters (task_counts, migration 0002).
_COUNTER_TOTALS = {
    "all": "total",
    "pending": "total - completed",
    "completed": "completed",
}
WRITABLE = ("title", "description", "completed", "priority", "due_date", "tags")
# The fixed statements (bench/baseline_app.py runs the same text, imported from here).
GET_SQL = f"SELECT {COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2"
INSERT_SQL = (
    "INSERT INTO tasks (id, user_id, title, description, completed, completed_at, "
    "priority, due_date, tags) VALUES ($1, $2, $3, $4, $5, "
    "CASE WHEN $5 THEN now() END, $6::task_priority, $7::text::timestamptz, $8) "
    f"RETURNING {COLUMNS}"
)
# The same insert under a per-user quota ($9 tasks at most). The upsert takes the user's counter
# row lock first, so concurrent creates of one user queue there and each sees the count the
# previous one left (kept by the tasks trigger, migration 0002): no race can exceed the quota.
# No row comes back when the user is at the quota.
QUOTA_INSERT_SQL = (
    "WITH quota AS (INSERT INTO task_counts AS c (user_id) VALUES ($2) "
    "ON CONFLICT (user_id) DO UPDATE SET total = c.total RETURNING total) "
    "INSERT INTO tasks (id, user_id, title, description, completed, completed_at, "
    "priority, due_date, tags) SELECT $1::uuid, $2::text, $3::text, $4::text, $5::boolean, "
    "CASE WHEN $5 THEN now() END, $6::task_priority, $7::text::timestamptz, $8::text[] "
    f"FROM quota WHERE quota.total < $9 RETURNING {COLUMNS}"
)
# Only on a failure path: tell a missing task from another user's or a stale one.
DIAGNOSE_SQL = "SELECT user_id, version FROM tasks WHERE id = $1"

# sort name -> (expression, SQL type of the cursor value). Columns are qualified: a bare
# `priority` in ORDER BY would name the text output column, not the enum.
_SORT_EXPRESSIONS = {
    "created_at": ("tasks.created_at", "timestamptz"),
    "updated_at": ("tasks.updated_at", "timestamptz"),
    "title": ("tasks.title", "text"),
    "priority": ("tasks.priority", "task_priority"),
    "due_date": ("tasks.due_date", "timestamptz"),
}
# The sort keys of each row, as text, for the cursor of the last row of a page.
_CURSOR_KEYS = ", ".join(
    f"({expression})::text AS key_{name}" for name, (expression, _) in _SORT_EXPRESSIONS.items()
)


def _sort_expression(name: str, descending: bool) -> tuple[str, str]:
    """Tasks without a due date sort last in both directions: NULL becomes the far end."""
    expression, sql_type = _SORT_EXPRESSIONS[name]
    if name == "due_date":
        end = "-infinity" if descending else "infinity"
        expression = f"COALESCE({expression}, '{end}'::timestamptz)"
    return expression, sql_type


def _cursor_key(position: Position, name: str, descending: bool) -> str:
    value = position.keys[name]
    if value is None:  # only due_date is nullable
        return "-infinity" if descending else "infinity"
    return value


class Missing(Exception):
    """No task with this id exists."""


class Foreign(Exception):
    """The task exists but belongs to another user."""


class Stale(Exception):
    """The task exists but its version is not one the caller named in If-Match."""


class OverQuota(Exception):
    """The user already stores as many tasks as the quota allows."""


class KeyReused(Exception):
    """The Idempotency-Key was used before with another body, or its task is gone."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ListQuery:
    status: str = "all"
    priority: str | None = None
    tag: str | None = None
    q: str | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    sort: str = "-created_at"
    limit: int = 50


@dataclass
class Page:
    rows: list[dict[str, Any]]
    total: int
    last_position: Position | None  # set when there is a next page


@dataclass
class _Where:
    clauses: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def add(self, clause: str, *values: Any) -> None:
        placeholders = []
        for value in values:
            self.args.append(value)
            placeholders.append(f"${len(self.args)}")
        self.clauses.append(clause.format(*placeholders))

    def sql(self) -> str:
        return " AND ".join(self.clauses)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _timestamp(value: datetime | None) -> str | None:
    """Date-times go to PostgreSQL as RFC 3339 text: asyncpg would turn Python's smallest and
    largest datetimes (0001-01-01T00:00:00Z, 9999-12-31T23:59:59.999999Z) into -infinity and
    infinity, which come back without an offset."""
    return None if value is None else value.isoformat()


def _status_only(query: ListQuery) -> bool:
    return (query.priority, query.tag, query.q, query.due_before, query.due_after) == (None,) * 5


def _filters(user_id: str, query: ListQuery) -> _Where:
    where = _Where()
    where.add("user_id = {}", user_id)
    if query.status == "pending":
        where.add("completed = false")
    elif query.status == "completed":
        where.add("completed = true")
    if query.priority is not None:
        where.add("priority = {}::task_priority", query.priority)
    if query.tag is not None:
        where.add("tags @> ARRAY[{}]::varchar(32)[]", query.tag)
    if query.q is not None:
        where.add("(title ILIKE {0} OR description ILIKE {0})", f"%{_escape_like(query.q)}%")
    if query.due_before is not None:
        where.add("due_date < {}::text::timestamptz", _timestamp(query.due_before))
    if query.due_after is not None:
        where.add("due_date > {}::text::timestamptz", _timestamp(query.due_after))
    return where


class TaskStore:
    def __init__(self, database: Database, max_tasks_per_user: int = 0) -> None:
        self.database = database
        self.max_tasks = max_tasks_per_user  # 0: no quota

    async def page(
        self, *, user_id: str, query: ListQuery, after: Position | None
    ) -> Page:
        descending = query.sort.startswith("-")
        sort_name = query.sort.lstrip("-")
        expression, sql_type = _sort_expression(sort_name, descending)
        direction = "DESC" if descending else "ASC"
        where = _filters(user_id, query)
        if _status_only(query):
            total_sql = (
                f"SELECT coalesce((SELECT {_COUNTER_TOTALS[query.status]} FROM task_counts "
                "WHERE user_id = $1), 0)"
            )
        else:
            total_sql = f"SELECT count(*) FROM tasks WHERE {where.sql()}"
        if after is not None:
            # Ties break on id ascending in both directions, which is the order of the
            # (user_id, created_at DESC, id) index for the default sort. The cursor holds the
            # key as text; PostgreSQL casts it back to the key's type.
            op = "<" if descending else ">"
            key = f"{{0}}::text::{sql_type}"
            where.add(
                f"{expression} {op}= {key} AND "
                f"({expression} {op} {key} OR ({expression} = {key} AND tasks.id > {{1}}))",
                _cursor_key(after, sort_name, descending),
                after.task_id,
            )
        where.args.append(query.limit + 1)
        order = f"{expression} {direction}, tasks.id ASC"
        # One round trip: the total and the page together. The outer row always exists, so an
        # empty page still brings its total (as one row of NULL task columns).
        sql = (
            f"SELECT page.*, counted.total FROM ({total_sql}) AS counted(total) "
            f"LEFT JOIN LATERAL (SELECT {COLUMNS}, {_CURSOR_KEYS}, "
            f"row_number() OVER (ORDER BY {order}) AS ordinal "
            f"FROM tasks WHERE {where.sql()} ORDER BY {order} LIMIT ${len(where.args)}) AS page "
            "ON true ORDER BY page.ordinal"
        )
        async with self.database.connection() as connection:
            records = await connection.fetch(sql, *where.args)
        total = records[0]["total"]
        found = [record for record in records if record["id"] is not None]
        rows = [dict(zip(TASK_FIELDS, record, strict=False)) for record in found[: query.limit]]
        last = None
        if len(found) > query.limit:
            record = found[query.limit - 1]
            last = Position(
                task_id=record["id"],
                keys={name: record[f"key_{name}"] for name in _SORT_EXPRESSIONS},
            )
        return Page(rows=rows, total=total, last_position=last)

    async def get(self, *, user_id: str, task_id: uuid.UUID) -> dict[str, Any]:
        async with self.database.connection() as connection:
            record = await connection.fetchrow(GET_SQL, task_id, user_id)
        if record is None:
            await self._diagnose(user_id=user_id, task_id=task_id, versions=None)
        return dict(record)

    async def create(
        self,
        *,
        user_id: str,
        fields: dict[str, Any],
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> dict[str, Any]:
        task_id = uuid.uuid4()
        args = (
            task_id, user_id, fields["title"], fields["description"], fields["completed"],
            fields["priority"], _timestamp(fields["due_date"]), fields["tags"],
        )
        if idempotency_key is None:
            async with self.database.connection() as connection:
                return await self._insert(connection, args)
        async with self.database.connection() as connection, connection.transaction():
            # A concurrent request with the same key waits here on the primary key until the
            # first commits, then finds its row: no duplicate task under concurrent retries.
            claimed = await connection.fetchval(
                "INSERT INTO idempotency_keys (user_id, key, request_hash, task_id) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, key) DO NOTHING RETURNING task_id",
                user_id, idempotency_key, request_hash, task_id,
            )
            if claimed is not None:  # over the quota: raises, and the claim is rolled back
                return await self._insert(connection, args)
            earlier = await connection.fetchrow(
                "SELECT request_hash, task_id FROM idempotency_keys WHERE user_id = $1 AND key = $2",
                user_id, idempotency_key,
            )
            if earlier["request_hash"] != request_hash:
                raise KeyReused("Idempotency-Key was already used with a different request body")
            record = await connection.fetchrow(GET_SQL, earlier["task_id"], user_id)
            if record is None:
                raise KeyReused("Idempotency-Key was used for a task that has since been deleted")
            return dict(record)

    async def _insert(self, connection: Any, args: tuple[Any, ...]) -> dict[str, Any]:
        if not self.max_tasks:
            return dict(await connection.fetchrow(INSERT_SQL, *args))
        record = await connection.fetchrow(QUOTA_INSERT_SQL, *args, self.max_tasks)
        if record is None:
            raise OverQuota()
        return dict(record)

    async def update(
        self,
        *,
        user_id: str,
        task_id: uuid.UUID,
        changes: dict[str, Any],
        versions: list[int] | None,
    ) -> dict[str, Any]:
        """Set the given writable fields (all of them for a replace); bump the version.
        `versions`: the versions If-Match accepts, None when any will do."""
        if not changes:
            task = await self.get(user_id=user_id, task_id=task_id)
            if versions is not None and task["version"] not in versions:
                raise Stale()
            return task
        args: list[Any] = [task_id, user_id, versions]
        sets = []
        for name in WRITABLE:
            if name in changes:
                value = changes[name]
                args.append(_timestamp(value) if name == "due_date" else value)
                cast = {"priority": "::task_priority", "due_date": "::text::timestamptz"}.get(
                    name, ""
                )
                sets.append(f"{name} = ${len(args)}{cast}")
                if name == "completed":
                    sets.append(
                        f"completed_at = CASE WHEN ${len(args)} "
                        "THEN COALESCE(completed_at, now()) END"
                    )
        async with self.database.connection() as connection:
            record = await connection.fetchrow(
                f"UPDATE tasks SET {', '.join(sets)}, version = version + 1, updated_at = now() "
                "WHERE id = $1 AND user_id = $2 "
                "AND ($3::int[] IS NULL OR version = ANY($3::int[])) "
                f"RETURNING {COLUMNS}",
                *args,
            )
        if record is None:
            await self._diagnose(user_id=user_id, task_id=task_id, versions=versions)
        return dict(record)

    async def delete(
        self, *, user_id: str, task_id: uuid.UUID, versions: list[int] | None
    ) -> None:
        async with self.database.connection() as connection:
            deleted = await connection.fetchval(
                "DELETE FROM tasks WHERE id = $1 AND user_id = $2 "
                "AND ($3::int[] IS NULL OR version = ANY($3::int[])) RETURNING id",
                task_id, user_id, versions,
            )
        if deleted is None:
            await self._diagnose(user_id=user_id, task_id=task_id, versions=versions)

    async def stats(self, *, user_id: str) -> dict[str, Any]:
        async with self.database.connection() as connection:
            record = await connection.fetchrow(
                "SELECT coalesce(c.total, 0) AS total, coalesce(c.completed, 0) AS completed, "
                "coalesce(c.low, 0) AS low, coalesce(c.medium, 0) AS medium, "
                "coalesce(c.high, 0) AS high, "
                "(SELECT count(*) FROM tasks WHERE user_id = $1 AND NOT completed "
                "AND due_date < now()) AS overdue "
                "FROM (SELECT $1::text AS user_id) AS caller "
                "LEFT JOIN task_counts AS c ON c.user_id = caller.user_id",
                user_id,
            )
        return {
            "total": record["total"],
            "completed": record["completed"],
            "pending": record["total"] - record["completed"],
            "overdue": record["overdue"],
            "by_priority": {p: record[p] for p in ("low", "medium", "high")},
        }

    async def _diagnose(
        self, *, user_id: str, task_id: uuid.UUID, versions: list[int] | None
    ) -> None:
        """Only on the failure path: tell missing, foreign and stale apart. Always raises."""
        async with self.database.connection() as connection:
            record = await connection.fetchrow(DIAGNOSE_SQL, task_id)
        if record is None:
            raise Missing()
        if record["user_id"] != user_id:
            raise Foreign()
        raise Stale()
