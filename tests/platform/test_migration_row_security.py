"""Migrations 0011 (row-level security) and 0012 (task_words) on a database in use, with rows in
every table that holds a user's data: the upgrade keeps every row, fills task_words with the
words of the tasks already there, and puts them behind the wall (the API's role sees only its
caller's rows); the way back restores 0010 with the rows as they were."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from alembic import command

from impl.platform.database import connect_options
from impl.platform.embedded import api_role_url
from impl.platform.migrate import alembic_config, upgrade
from impl.platform.row_scope import enter_as

ALICE = "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY"
BOB = "zZ9yY8xX7wW6vV5uU4tT3sS2rR1qQ0pP"
TABLES = ("tasks", "task_counts", "task_tag_counts", "task_tags", "task_tombstones",
          "task_reminders", "idempotency_keys", "webhook_subscriptions", "webhook_deliveries")


async def _snapshot(connection: asyncpg.Connection) -> dict[str, list[str]]:
    return {
        table: [row[0] for row in await connection.fetch(
            f"SELECT to_jsonb(t)::text FROM {table} AS t ORDER BY 1")]
        for table in TABLES
    }


async def _add_task(connection: asyncpg.Connection, user_id: str, title: str) -> uuid.UUID:
    task_id = uuid.uuid4()
    await connection.execute(
        "INSERT INTO tasks (id, user_id, title, tags, due_date, reminders) "
        "VALUES ($1, $2, $3, $4, now() + interval '1 day', '[{\"minutes_before\": 10}]')",
        task_id, user_id, title, ["home"],
    )
    return task_id


async def test_upgrade_keeps_every_row_behind_the_wall_and_downgrade_restores_0010(
        fresh_database: str) -> None:
    await asyncio.to_thread(upgrade, fresh_database, "0010")
    dsn = connect_options(fresh_database).dsn
    connection = await asyncpg.connect(dsn)  # the superuser, whom no policy holds
    try:
        await connection.execute(
            "INSERT INTO webhook_subscriptions (id, user_id, url, event_types, secret) "
            "VALUES ($1, $2, 'https://hooks.example.com/a', '{task.created}', 'whsec_test')",
            uuid.uuid4(), ALICE)
        alice_task = await _add_task(connection, ALICE, "Water the ficus")
        await _add_task(connection, BOB, "Renew the passport")
        gone = await _add_task(connection, BOB, "Gone soon")
        await connection.execute("DELETE FROM tasks WHERE id = $1", gone)  # a tombstone
        await connection.execute(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, task_id) "
            "VALUES ($1, 'key-1', repeat('0', 64), $2)", ALICE, alice_task)
        before = await _snapshot(connection)
        assert all(before[table] for table in TABLES), "a table without rows checks nothing"

        await asyncio.to_thread(upgrade, fresh_database, "head")
        assert await _snapshot(connection) == before
        words = await connection.fetch(
            "SELECT user_id, word FROM task_words WHERE task_id = $1", alice_task)
        assert {row["user_id"] for row in words} == {ALICE}
        assert any(row["word"].startswith("ficus") for row in words), words

        api = await asyncpg.connect(api_role_url(dsn))  # held by the wall, as the server is
        try:
            for table in (*TABLES, "task_words"):  # no caller named: nothing at all
                assert await api.fetchval(f"SELECT count(*) FROM {table}") == 0, table
            async with api.transaction():
                await enter_as(api, BOB)
                for table in (*TABLES, "task_words"):
                    users = await api.fetch(f"SELECT DISTINCT user_id FROM {table}")
                    assert {row["user_id"] for row in users} <= {BOB}, table
                assert await api.fetchval(
                    "UPDATE tasks SET title = 'taken' WHERE id = $1 RETURNING id",
                    alice_task) is None
        finally:
            await api.close()
        assert await _snapshot(connection) == before

        await asyncio.to_thread(command.downgrade, alembic_config(fresh_database), "0010")
        assert await _snapshot(connection) == before
        assert await connection.fetchval("SELECT to_regclass('task_words')") is None
        assert not await connection.fetchval(
            "SELECT bool_or(relrowsecurity OR relforcerowsecurity) FROM pg_class "
            "WHERE relname = ANY($1::text[])", list(TABLES))
        await _add_task(connection, BOB, "after the way back")  # the triggers still work
    finally:
        await connection.close()
