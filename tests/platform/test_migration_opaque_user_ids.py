"""Migration 0003 (user ids become opaque text) upgrades a database in use without losing or
changing anything: real data in every table at 0002, a snapshot, the upgrade, the same snapshot.
Then the converted database keeps working (triggers, counters, idempotency) for old and new ids.
"""

from __future__ import annotations

import asyncio
import importlib
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from impl.platform import user_ids
from impl.platform.database import connect_options
from impl.platform.migrate import alembic_config, upgrade

UUID_USER = "a11ce000-0000-4000-8000-000000000001"  # the demo user alice: keeps her id
BETTER_AUTH_USER = "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY"
TABLES = ("tasks", "idempotency_keys", "task_counts")


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(connect_options(url).dsn)


async def _columns(connection: asyncpg.Connection) -> set[str]:
    """The columns of the tables holding user ids (names only: one row of JSON drops them)."""
    return {
        record[0]
        for record in await connection.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ANY($1)",
            list(TABLES),
        )
    }


async def _snapshot(
    connection: asyncpg.Connection, without: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    """Every row of every table holding user ids, as JSON text (a uuid and its text form print
    alike), in a stable order; `without` names columns left out."""
    row = "to_jsonb(t) - $1::text[]"
    return {
        table: [
            record[0]
            for record in await connection.fetch(
                f"SELECT ({row})::text FROM {table} AS t ORDER BY ({row})::text", list(without)
            )
        ]
        for table in TABLES
    }


async def _load_0002_data(connection: asyncpg.Connection) -> None:
    """Tasks of two users in varied states, idempotency keys, and the counters the trigger keeps."""
    users = [UUID_USER, str(uuid.uuid4())]
    for owner, user in enumerate(users):
        for index in range(6):
            task_id = uuid.uuid4()
            await connection.execute(
                "INSERT INTO tasks (id, user_id, title, description, completed, completed_at, "
                "priority, due_date, tags, version) VALUES ($1, $2::uuid, $3, $4, $5, "
                "CASE WHEN $5 THEN now() END, $6::task_priority, $7, $8, $9)",
                task_id, user, f"task {owner}-{index}", "détails" if index % 2 else None,
                index % 3 == 0, ("low", "medium", "high")[index % 3],
                None if index % 2 else datetime(2026, 12, 24, 18, tzinfo=UTC),
                ["home", "work"][: index % 3], index + 1,
            )
            if index < 2:
                await connection.execute(
                    "INSERT INTO idempotency_keys (user_id, key, request_hash, task_id) "
                    "VALUES ($1::uuid, $2, $3, $4)",
                    user, f"key-{index}", "h" * 64, task_id,
                )
    # Some updates and a delete, so the counters are the trigger's arithmetic, not fresh counts.
    await connection.execute("UPDATE tasks SET completed = true, completed_at = now() "
                             "WHERE title LIKE '%-1'")
    await connection.execute("DELETE FROM tasks WHERE title = 'task 1-5'")


def test_the_migration_checks_what_the_api_checks() -> None:
    """0003 keeps a frozen copy of the rule (a migration is a snapshot): the same as today's."""
    migration = importlib.import_module("impl.migrations.versions.0003_opaque_user_ids")
    assert migration.USER_ID_CHECK == user_ids.SQL_CHECK


async def test_upgrade_from_0002_keeps_every_row_and_the_database_keeps_working(
    fresh_database: str,
) -> None:
    await asyncio.to_thread(upgrade, fresh_database, "0002")
    connection = await _connect(fresh_database)
    try:
        await _load_0002_data(connection)
        before = await _snapshot(connection)
        assert all(before[table] for table in TABLES)
        await connection.close()

        await asyncio.to_thread(upgrade, fresh_database, "0003")

        connection = await _connect(fresh_database)
        assert await _snapshot(connection) == before
        columns_0003 = await _columns(connection)
        # Later migrations add columns and tables (0004: tasks.search, more counters; 0005:
        # task_tags; 0007: tasks.change_xid, task_tombstones), never change these.
        await connection.close()
        await asyncio.to_thread(upgrade, fresh_database, "head")
        connection = await _connect(fresh_database)
        later = tuple(sorted(await _columns(connection) - columns_0003))
        assert await _snapshot(connection, without=later) == before
        types = await connection.fetch(
            "SELECT table_name, data_type, collation_name FROM information_schema.columns "
            "WHERE column_name = 'user_id' ORDER BY table_name"
        )
        # Every table with a user id (later migrations add more) holds it the same way.
        assert {(row[1], row[2]) for row in types} == {("text", "C")}
        assert {*TABLES, "task_tag_counts", "task_tags", "task_tombstones", "task_reminders"} <= {
            row[0] for row in types}

        # The counters trigger was recreated: writes under an old and a new id keep counting.
        for user in (UUID_USER, BETTER_AUTH_USER):
            await connection.execute(
                "INSERT INTO tasks (id, user_id, title) VALUES ($1, $2, 'after')",
                uuid.uuid4(), user,
            )
            await connection.execute(
                "UPDATE tasks SET priority = 'high', change_xid = pg_current_xact_id() "
                "WHERE user_id = $1 AND title = 'after'", user
            )
        counted = await connection.fetch(
            "SELECT user_id, count(*) AS total, count(*) FILTER (WHERE completed) AS completed, "
            "count(*) FILTER (WHERE priority = 'high') AS high FROM tasks GROUP BY user_id"
        )
        kept = {
            row["user_id"]: (row["total"], row["completed"], row["high"])
            # A user's counters: the sums of the user's slots (migration 0010).
            for row in await connection.fetch(
                "SELECT user_id, sum(total) AS total, sum(completed) AS completed, "
                "sum(high) AS high FROM task_counts GROUP BY user_id HAVING sum(total) > 0")
        }
        assert kept == {row["user_id"]: (row[1], row[2], row[3]) for row in counted}
        assert BETTER_AUTH_USER in kept and UUID_USER in kept

        # The database itself refuses what the token rule refuses.
        for bad in ("", "x" * 256, "a\nb", "a\x7fb", "a\x85b"):
            with pytest.raises(asyncpg.CheckViolationError):
                await connection.execute(
                    "INSERT INTO tasks (id, user_id, title) VALUES ($1, $2, 't')",
                    uuid.uuid4(), bad,
                )
    finally:
        await connection.close()


async def test_downgrade_refuses_while_an_id_is_not_a_uuid_and_changes_nothing(
    fresh_database: str,
) -> None:
    await asyncio.to_thread(upgrade, fresh_database, "head")
    connection = await _connect(fresh_database)
    try:
        await connection.execute(
            "INSERT INTO tasks (id, user_id, title) VALUES ($1, $2, 't')",
            uuid.uuid4(), BETTER_AUTH_USER,
        )
        before = await _snapshot(connection)
        config = alembic_config(fresh_database)
        with pytest.raises(Exception, match="invalid input syntax for type uuid"):
            await asyncio.to_thread(command.downgrade, config, "0002")
        assert await _snapshot(connection) == before
        head = ScriptDirectory.from_config(config).get_current_head()
        assert await connection.fetchval("SELECT version_num FROM alembic_version") == head

        # With only UUID ids left, the way back works.
        await connection.execute("DELETE FROM tasks")
        await connection.execute("DELETE FROM task_counts")
        await connection.execute(
            "INSERT INTO tasks (id, user_id, title) VALUES ($1, $2, 't')", uuid.uuid4(), UUID_USER
        )
        await asyncio.to_thread(command.downgrade, config, "0002")
        assert await connection.fetchval("SELECT version_num FROM alembic_version") == "0002"
        assert await connection.fetchval(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'tasks' AND column_name = 'user_id'"
        ) == "uuid"
    finally:
        await connection.close()
