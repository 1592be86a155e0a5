"""User-scoped SQL for tasks, on asyncpg.

Every function that reads or writes tasks takes the caller's `user_id` as a required keyword
argument and filters on it: no handler can reach a row without it. Behind that, PostgreSQL's
row-level security (migration 0011) holds every statement to the caller it names (as_caller,
impl/platform/row_scope.py), so a statement that forgot its condition still reaches no other
user's rows. Queries are hand-written SQL (one round trip each where possible, no ORM
hydration); their column lists and parameters derive from the table (impl/tasks/columns.py), so
they name no task field but the ones with a rule of their own (completed_at follows completed).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from impl.platform.database import Database
from impl.platform.row_scope import as_caller, enter_as
from impl.platform.wake_ups import WakeUps
from impl.tasks import occurrences
from impl.tasks.checks import refusing_broken_checks
from impl.tasks.columns import (
    DATETIMES,
    FIELDS,
    WRITABLE,
    WRITABLE_COLUMNS,
    parameter_type,
    select_list,
)
from impl.tasks.cursor import Position
from impl.tasks.errors import ForeignTask, KeyReused, OverQuota, StaleTask, TaskNotFound
from impl.tasks.list_sql import TOTAL_CAP, ListQuery, last_position, list_statement, timestamp

__all__ = ["ListQuery", "Page", "TaskStore", "insert_args"]  # ListQuery: the handlers build it

# The returned fields, in the order COLUMNS selects them (both from the table).
TASK_FIELDS = FIELDS
COLUMNS = select_list()
# The fixed statements (bench/baseline_app.py runs the same text, imported from here, less the
# caller's condition: bench/sql.py).
# Each statement that runs alone also names its caller for row-level security (as_caller: the
# same parameter as its user condition, no extra round trip).
GET_SQL = f"SELECT {COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2 AND {as_caller('$2')}"
# Parameters of an insert (insert_args): $1 id, $2 user_id, then the writable fields in WRITABLE's
# order, each cast to its column's type; completed_at is set with completed.
INSERT_COLUMNS = ("id", "user_id", *WRITABLE)
INSERT_PARAMETERS = (
    "$1::uuid",
    "$2::text",
    *(f"${index}::{parameter_type(column)}" for index, column in enumerate(WRITABLE_COLUMNS, 3)),
)
COMPLETED = f"${INSERT_COLUMNS.index('completed') + 1}"  # the parameter completed_at follows
RECURRENCE = f"${INSERT_COLUMNS.index('recurrence') + 1}"  # a recurring task starts a series
_INSERT_INTO = f"INSERT INTO tasks ({', '.join(INSERT_COLUMNS)}, completed_at, series_id)"
_INSERT_VALUES = ", ".join([
    *INSERT_PARAMETERS,
    f"CASE WHEN {COMPLETED} THEN now() END",
    f"CASE WHEN {RECURRENCE} IS NOT NULL THEN $1::uuid END",
])
INSERT_SQL = f"{_INSERT_INTO} SELECT {_INSERT_VALUES} WHERE {as_caller('$2')} RETURNING {COLUMNS}"
# The same insert under a per-user quota (one more parameter: the quota): no row comes back when
# the user's count (the sum of the counter slots, migration 0010) is at the quota. It takes no
# lock, so one user's creates do not queue behind each other; the price is that creates running
# at the same moment do not see each other: each sees the tasks committed before it started, so
# a user can end up over the quota by at most the creates in flight at once, less one (never
# more than the connections of all replicas' pools: docs/abuse-controls.md). Later creates are
# refused until deletes bring the count under the quota again. The caller's condition stays in
# the top-level WHERE (a one-time filter evaluated before the counters are read: a volatile
# condition with a sub-select is never pushed down into the aggregate).
QUOTA_INSERT_SQL = (
    "WITH quota AS (SELECT coalesce(sum(total), 0)::bigint AS total FROM task_counts "
    "WHERE user_id = $2) "
    f"{_INSERT_INTO} SELECT {_INSERT_VALUES} "
    f"FROM quota WHERE quota.total < ${3 + len(WRITABLE)} AND {as_caller('$2')} "
    f"RETURNING {COLUMNS}"
)
# A recurring task's next occurrence (impl/tasks/occurrences.py), in its series.
_SPAWN_VALUES = ", ".join([
    *INSERT_PARAMETERS, "NULL",
    f"${len(INSERT_COLUMNS) + 1}::uuid", f"${len(INSERT_COLUMNS) + 2}::time",
])
SPAWN_SQL = f"{_INSERT_INTO[:-1]}, wall_time) VALUES ({_SPAWN_VALUES}) RETURNING id"
# When the next occurrence could not be made (the series ended): the claim is let go.
UNCLAIM_SQL = (
    "UPDATE tasks SET next_occurrence_id = NULL, change_xid = pg_current_xact_id() "
    f"WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}"
)
# A delete under If-Match's versions ($3: NULL when any will do).
DELETE_SQL = (
    f"DELETE FROM tasks WHERE id = $1 AND user_id = $2 AND {as_caller('$2')} "
    "AND ($3::int[] IS NULL OR version = ANY($3::int[])) RETURNING id"
)
# Only on a failure path: tell a missing task from another user's or a stale one. Another
# user's rows are out of the API's sight, so it asks through a door (migration 0011), which
# says 'own', 'foreign' or nothing (no such task).
DIAGNOSE_SQL = "SELECT task_api_locate_task($1, $2)"


def _parameter(name: str, value: Any) -> Any:
    return timestamp(value) if name in DATETIMES else value


def insert_args(task_id: uuid.UUID, user_id: str, fields: dict[str, Any]) -> tuple[Any, ...]:
    """INSERT_SQL's parameters; `fields` holds every writable field (KeyError otherwise)."""
    return (task_id, user_id, *(_parameter(name, fields[name]) for name in WRITABLE))


@dataclass
class Page:
    rows: list[dict[str, Any]]
    total: int
    total_exact: bool  # False: more than `total` tasks match (a capped count)
    last_position: Position | None  # set when there is a next page


class TaskStore:
    def __init__(self, database: Database, max_tasks_per_user: int = 0,
                 wake_ups: WakeUps | None = None) -> None:
        self.database = database
        self.max_tasks = max_tasks_per_user  # 0: no quota
        # After each write has committed: its user's streams on every replica (and webhook
        # workers) look again (impl/tasks/change_wake_ups.py). None: only their polls find it.
        self.wake_ups = wake_ups

    def _committed(self, user_id: str) -> None:
        if self.wake_ups is not None:
            self.wake_ups.send((user_id,))

    async def page(
        self, *, user_id: str, query: ListQuery, after: Position | None
    ) -> Page:
        statement = list_statement(user_id, query, after)
        async with self.database.connection() as connection:
            records = await connection.fetch(statement.sql, *statement.args)
        total = records[0]["total"]
        exact = statement.counted or total <= TOTAL_CAP
        found = [record for record in records if record["id"] is not None]
        rows = [dict(zip(TASK_FIELDS, record, strict=False)) for record in found[: query.limit]]
        last = last_position(found[query.limit - 1]) if len(found) > query.limit else None
        return Page(rows=rows, total=total if exact else TOTAL_CAP, total_exact=exact,
                    last_position=last)

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
        args = insert_args(task_id, user_id, fields)
        if idempotency_key is None:
            async with self.database.connection() as connection:
                created = await self._insert(connection, args)
            self._committed(user_id)
            return created
        async with self.database.connection() as connection, connection.transaction():
            await enter_as(connection, user_id)
            # A concurrent request with the same key waits here on the primary key until the
            # first commits, then finds its row: no duplicate task under concurrent retries.
            claimed = await connection.fetchval(
                "INSERT INTO idempotency_keys (user_id, key, request_hash, task_id) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, key) DO NOTHING RETURNING task_id",
                user_id, idempotency_key, request_hash, task_id,
            )
            if claimed is None:  # a replay: the task the key made
                return await self._replay(connection, user_id, idempotency_key, request_hash)
            # Over the quota this raises, and the claim is rolled back.
            created = await self._insert(connection, args)
        self._committed(user_id)
        return created

    async def _replay(self, connection: Any, user_id: str, idempotency_key: str,
                      request_hash: str | None) -> dict[str, Any]:
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
            with refusing_broken_checks():
                return dict(await connection.fetchrow(INSERT_SQL, *args))
        with refusing_broken_checks():
            record = await connection.fetchrow(QUOTA_INSERT_SQL, *args, self.max_tasks)
        if record is None:
            raise OverQuota(self.max_tasks)
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
                raise StaleTask()
            return task
        args: list[Any] = [task_id, user_id, versions]
        sets = []
        new_value: dict[str, str] = {}  # a changed field's parameter, as SQL
        for column in WRITABLE_COLUMNS:
            name = column.name
            if name in changes:
                args.append(_parameter(name, changes[name]))
                new_value[name] = f"${len(args)}::{parameter_type(column)}"
                sets.append(f"{name} = ${len(args)}::{parameter_type(column)}")
                if name == "completed":
                    sets.append(
                        f"completed_at = CASE WHEN ${len(args)} "
                        "THEN COALESCE(completed_at, now()) END"
                    )
        recurrence = new_value.get("recurrence", "recurrence")  # the rule after this write
        if changes.keys() & {"recurrence", "time_zone", "due_date"}:
            sets.append("wall_time = NULL")  # the client's due date shows the time again
        if "recurrence" in changes:  # a task that becomes recurring starts its series
            sets.append(f"series_id = CASE WHEN {recurrence} IS NULL THEN series_id "
                        "ELSE coalesce(series_id, id) END")
        completing = changes.get("completed") is True
        head = (
            f"UPDATE tasks SET {', '.join(sets)}, version = version + 1, updated_at = now(), "
            # The change feed's stamp (migration 0007: its trigger refuses an UPDATE without).
            "change_xid = pg_current_xact_id() "
        )
        where = (
            f"WHERE id = $1 AND user_id = $2 AND {as_caller('$2')} "
            "AND ($3::int[] IS NULL OR version = ANY($3::int[])) "
        )
        async with self.database.connection() as connection:
            if not completing:
                with refusing_broken_checks():
                    record = await connection.fetchrow(
                        f"{head}{where}RETURNING {COLUMNS}", *args)
            else:
                recurs = changes.get("recurrence") is not None  # made recurring by this write
                record = await self._complete(connection, head, where, recurrence, args, recurs)
        if record is None:
            await self._diagnose(user_id=user_id, task_id=task_id, versions=versions)
        self._committed(user_id)
        task = dict(record)
        task.pop("wall_time", None)  # internal: read for the next occurrence only
        return task

    async def _complete(self, connection: Any, head: str, where: str, recurrence: str,
                        args: list[Any], recurs: bool) -> Any:
        """A write that completes the task. Most tasks do not recur (their rule after this
        write is NULL): for them the UPDATE runs alone, one round trip, as any other write.
        Otherwise, or when that finds no such row (a recurring task, or one missing, foreign
        or stale), the transaction below, where the next occurrence is written with the
        completion."""
        if not recurs:
            with refusing_broken_checks():
                record = await connection.fetchrow(
                    f"{head}{where}AND {recurrence} IS NULL RETURNING {COLUMNS}", *args)
            if record is not None:
                return record
        # Completing a recurring task claims the id of its next occurrence, once: only a
        # pending task whose claim is empty (the row lock orders concurrent completions; a
        # reopened task keeps its claim, so completing it again makes none).
        claim = uuid.uuid4()
        claiming = (
            f", next_occurrence_id = CASE WHEN NOT completed AND next_occurrence_id IS NULL "
            f"AND {recurrence} IS NOT NULL THEN ${len(args) + 1}::uuid "
            "ELSE next_occurrence_id END "
        )
        statement = f"{head.rstrip()}{claiming}{where}RETURNING {COLUMNS}, wall_time"
        async with connection.transaction():
            with refusing_broken_checks():
                record = await connection.fetchrow(statement, *args, claim)
            if record is not None and record["next_occurrence_id"] == claim:
                record = await occurrences.make_next(connection, dict(record))
        return record

    async def delete(
        self, *, user_id: str, task_id: uuid.UUID, versions: list[int] | None
    ) -> None:
        async with self.database.connection() as connection:
            deleted = await connection.fetchval(DELETE_SQL, task_id, user_id, versions)
        if deleted is None:
            await self._diagnose(user_id=user_id, task_id=task_id, versions=versions)
        self._committed(user_id)

    async def stats(self, *, user_id: str) -> dict[str, Any]:
        async with self.database.connection() as connection:
            record = await connection.fetchrow(
                # The sums of the user's counter slots (migration 0010): no row, all zero.
                "SELECT coalesce(sum(total), 0)::bigint AS total, "
                "coalesce(sum(completed), 0)::bigint AS completed, "
                "coalesce(sum(low), 0)::bigint AS low, "
                "coalesce(sum(medium), 0)::bigint AS medium, "
                "coalesce(sum(high), 0)::bigint AS high, "
                "(SELECT count(*) FROM tasks WHERE user_id = $1 AND NOT completed "
                "AND due_date < now()) AS overdue "
                f"FROM task_counts WHERE user_id = $1 AND {as_caller('$1')}",
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
            whose = await connection.fetchval(DIAGNOSE_SQL, task_id, user_id)
        if whose is None:
            raise TaskNotFound()
        if whose == "foreign":
            raise ForeignTask()
        raise StaleTask()
