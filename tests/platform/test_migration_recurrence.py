"""Migration 0008 (recurrence and reminders) on a database in use: every row is kept, existing
tasks get no rule, no zone and no reminders, a write after it schedules its reminders, and the
way back restores 0007."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from alembic import command

from impl.platform.database import connect_options
from impl.platform.migrate import alembic_config, upgrade

USER = "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY"
TABLES = ("tasks", "task_counts", "task_tag_counts", "task_tags", "task_tombstones")
ADDED = ("recurrence", "time_zone", "reminders", "series_id", "next_occurrence_id", "wall_time")


async def _snapshot(connection: asyncpg.Connection) -> dict[str, list[str]]:
    """Each table's rows as JSON, without the columns 0008 adds."""
    dropped = " - ".join(f"'{name}'" for name in ADDED)
    return {
        table: [row[0] for row in await connection.fetch(
            f"SELECT (to_jsonb(t) - {dropped})::text FROM {table} AS t ORDER BY 1")]
        for table in TABLES
    }


async def test_upgrade_keeps_every_row_and_downgrade_restores_0007(fresh_database: str) -> None:
    await asyncio.to_thread(upgrade, fresh_database, "0007")
    connection = await asyncpg.connect(connect_options(fresh_database).dsn)
    try:
        for index in range(6):
            await connection.execute(
                "INSERT INTO tasks (id, user_id, title, tags, due_date) "
                "VALUES ($1, $2, $3, $4, now() + interval '1 day')",
                uuid.uuid4(), USER, f"task {index}", [["home"], []][index % 2],
            )
        await connection.execute("DELETE FROM tasks WHERE title = 'task 5'")  # a tombstone
        before = await _snapshot(connection)
        assert all(before[table] for table in TABLES), "a table without rows checks nothing"

        await asyncio.to_thread(upgrade, fresh_database, "0008")
        assert await _snapshot(connection) == before
        added = await connection.fetch(
            "SELECT DISTINCT recurrence, time_zone, reminders::text, series_id, "
            "next_occurrence_id, wall_time FROM tasks")
        assert [tuple(row) for row in added] == [(None, None, "[]", None, None, None)]
        assert await connection.fetchval("SELECT count(*) FROM task_reminders") == 0
        # A write after it schedules its reminder.
        await connection.execute(
            "UPDATE tasks SET reminders = '[{\"minutes_before\": 10}]', "
            "change_xid = pg_current_xact_id() WHERE title = 'task 0'")
        assert await connection.fetchval("SELECT count(*) FROM task_reminders") == 1
        written = await _snapshot(connection)

        await asyncio.to_thread(command.downgrade, alembic_config(fresh_database), "0007")
        assert await _snapshot(connection) == written
        assert await connection.fetchval("SELECT to_regclass('task_reminders')") is None
    finally:
        await connection.close()
