"""Migration 0009 (webhooks) on a database in use: every row is kept, no delivery is invented
for the changes made before it, a change after it reaches the outbox only for a user who
subscribed, and the way back restores 0008 with the rows written in between."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from alembic import command

from impl.platform.database import connect_options
from impl.platform.migrate import alembic_config, upgrade

SUBSCRIBED = "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY"
UNSUBSCRIBED = "zZ9yY8xX7wW6vV5uU4tT3sS2rR1qQ0pP"
TABLES = ("tasks", "task_counts", "task_tag_counts", "task_tags", "task_tombstones",
          "task_reminders")


async def _snapshot(connection: asyncpg.Connection) -> dict[str, list[str]]:
    return {
        table: [row[0] for row in await connection.fetch(
            f"SELECT to_jsonb(t)::text FROM {table} AS t ORDER BY 1")]
        for table in TABLES
    }


async def _add_task(connection: asyncpg.Connection, user_id: str, title: str) -> None:
    await connection.execute(
        "INSERT INTO tasks (id, user_id, title, tags, due_date, reminders) "
        "VALUES ($1, $2, $3, $4, now() + interval '1 day', '[{\"minutes_before\": 10}]')",
        uuid.uuid4(), user_id, title, ["home"],
    )


async def test_upgrade_keeps_every_row_and_downgrade_restores_0008(fresh_database: str) -> None:
    await asyncio.to_thread(upgrade, fresh_database, "0008")
    connection = await asyncpg.connect(connect_options(fresh_database).dsn)
    try:
        for index in range(4):
            await _add_task(connection, (SUBSCRIBED, UNSUBSCRIBED)[index % 2], f"task {index}")
        await connection.execute("DELETE FROM tasks WHERE title = 'task 3'")  # a tombstone
        before = await _snapshot(connection)
        assert all(before[table] for table in TABLES), "a table without rows checks nothing"

        await asyncio.to_thread(upgrade, fresh_database, "0009")
        assert await _snapshot(connection) == before
        assert await connection.fetchval("SELECT count(*) FROM webhook_deliveries") == 0

        await connection.execute(
            "INSERT INTO webhook_subscriptions (id, user_id, url, event_types, secret) "
            "VALUES ($1, $2, 'https://hooks.example.com/a', '{task.created,task.completed}', "
            "'whsec_test')", uuid.uuid4(), SUBSCRIBED)
        await _add_task(connection, SUBSCRIBED, "after, subscribed")
        await _add_task(connection, UNSUBSCRIBED, "after, not subscribed")
        await connection.execute(  # an event type the subscription did not ask for
            "UPDATE tasks SET title = 'renamed', change_xid = pg_current_xact_id() "
            "WHERE title = 'task 0'")
        outbox = await connection.fetch(
            "SELECT user_id, event_type, payload->'data'->>'title' AS title "
            "FROM webhook_deliveries")
        assert [tuple(row) for row in outbox] == [
            (SUBSCRIBED, "task.created", "after, subscribed")]
        written = await _snapshot(connection)

        await asyncio.to_thread(command.downgrade, alembic_config(fresh_database), "0008")
        assert await _snapshot(connection) == written
        for gone in ("webhook_deliveries", "webhook_subscriptions"):
            assert await connection.fetchval("SELECT to_regclass($1)", gone) is None
        assert await connection.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname LIKE '%webhook%'") == 0
        await _add_task(connection, SUBSCRIBED, "after the way back")  # no trigger left to fail
    finally:
        await connection.close()
