"""Migration 0007 (change tracking) on a database in use, with rows in every table: nothing else
changes, every existing task is in the next first sync, writes after it are tracked, and the
way back restores 0006."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from alembic import command

from impl.platform.database import connect_options
from impl.platform.migrate import alembic_config, upgrade
from tests.support.factories import RECOUNT, RECOUNT_TAGS, RELIST_TAGS

USERS = ("a11ce000-0000-4000-8000-000000000001", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY")
# Every table that holds a user's data before 0007 (0007 adds task_tombstones).
TABLES = ("tasks", "task_counts", "task_tag_counts", "task_tags", "idempotency_keys")


async def _snapshot(connection: asyncpg.Connection) -> dict[str, list[str]]:
    """Each table's rows as JSON, without the column 0007 adds."""
    return {
        table: [row[0] for row in await connection.fetch(
            f"SELECT (to_jsonb(t) - 'change_xid')::text FROM {table} AS t ORDER BY 1")]
        for table in TABLES
    }


async def test_upgrade_keeps_every_row_tracks_what_follows_and_downgrade_restores_0006(
    fresh_database: str,
) -> None:
    await asyncio.to_thread(upgrade, fresh_database, "0006")
    connection = await asyncpg.connect(connect_options(fresh_database).dsn)
    try:
        for owner, user in enumerate(USERS):
            for index in range(6):
                task_id = uuid.uuid4()
                await connection.execute(
                    "INSERT INTO tasks (id, user_id, title, priority, tags, completed, "
                    "completed_at) VALUES ($1, $2, $3, $4::task_priority, $5, $6, "
                    "CASE WHEN $6 THEN now() END)",
                    task_id, user, f"task {owner}-{index}", ("low", "medium", "high")[index % 3],
                    [["home", "work"], ["home"], []][index % 3], index % 2 == 0,
                )
                await connection.execute(
                    "INSERT INTO idempotency_keys (user_id, key, request_hash, task_id) "
                    "VALUES ($1, $2, $3, $4)", user, f"key-{index}", "0" * 64, task_id,
                )
        before = await _snapshot(connection)
        assert all(before[table] for table in TABLES), "a table without rows checks nothing"

        await asyncio.to_thread(upgrade, fresh_database, "0007")
        assert await _snapshot(connection) == before
        assert await connection.fetch(RECOUNT) == []
        assert await connection.fetch(RECOUNT_TAGS) == []
        assert await connection.fetch(RELIST_TAGS) == []
        # Every existing task carries the migration's transaction: a first sync finds it.
        stamps = await connection.fetch("SELECT DISTINCT change_xid::text FROM tasks")
        assert len(stamps) == 1
        assert await connection.fetchval("SELECT count(*) FROM task_tombstones") == 0

        # Writes after it are tracked: a newer stamp, a tombstone, the stamp check.
        user = USERS[0]
        edited, removed = [row["id"] for row in await connection.fetch(
            "SELECT id FROM tasks WHERE user_id = $1 ORDER BY title LIMIT 2", user)]
        await connection.execute(
            "UPDATE tasks SET title = 'edited', change_xid = pg_current_xact_id() "
            "WHERE id = $1", edited)
        await connection.execute("DELETE FROM tasks WHERE id = $1", removed)
        assert await connection.fetchval(
            "SELECT change_xid > $2::text::xid8 FROM tasks WHERE id = $1",
            edited, stamps[0][0]) is True
        assert await connection.fetchval(
            "SELECT task_id FROM task_tombstones WHERE user_id = $1", user) == removed
        assert await connection.fetch(RECOUNT) == []

        await asyncio.to_thread(command.downgrade, alembic_config(fresh_database), "0006")
        assert await connection.fetchval("SELECT to_regclass('task_tombstones')") is None
        assert await connection.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'change_xid'"
        ) == 0
        # 0006's writes work again as they did (no trigger asks for a stamp).
        await connection.execute("UPDATE tasks SET title = 'after downgrade' WHERE id = $1", edited)
    finally:
        await connection.close()
