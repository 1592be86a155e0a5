"""The wake-ups sent after the writes commit (impl/platform/wake_ups.py) with the task changes'
statement (impl/tasks/change_wake_ups.py), against real PostgreSQL: every key named reaches a
listener, a burst goes out in fewer statements than keys (one at a time, each carrying what was
named meanwhile), the webhook workers are woken only for a user with a subscription, and a
database that refuses the statement loses nothing but that wake-up (the feed watch covers it)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from impl.platform.database import Database, connect_options
from impl.platform.wake_ups import WakeUps
from impl.tasks.change_wake_ups import WAKE_SQL
from tests.support.factories import new_user
from tests.support.servers import settings


async def _listening(database_url: str, channel: str) -> tuple[asyncpg.Connection,
                                                               asyncio.Queue[str]]:
    listener = await asyncpg.connect(connect_options(database_url).dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(channel, lambda *args: heard.put_nowait(str(args[3])))
    return listener, heard


async def _drain(heard: asyncio.Queue[str], count: int) -> list[str]:
    return [await asyncio.wait_for(heard.get(), 10) for _ in range(count)]


async def test_a_burst_reaches_the_listener_in_fewer_statements(database_url: str) -> None:
    database = Database(database_url, settings(database_url))
    await database.open()
    listener, heard = await _listening(database_url, "task_changes")
    try:
        wake_ups = WakeUps(database, WAKE_SQL)
        users = [new_user().id for _ in range(50)]
        for user in users:
            wake_ups.send([user])  # as 50 writes committing in one moment
        await wake_ups.stop()
        assert sorted(await _drain(heard, len(users))) == sorted(users)
        assert wake_ups.keys == len(users)
        assert 1 <= wake_ups.statements < len(users)
        # Idle, a write gets its own statement at once.
        wake_ups.send([users[0]])
        assert await _drain(heard, 1) == [users[0]]
        await wake_ups.stop()
    finally:
        await listener.close()
        await database.close()


async def test_webhook_workers_are_woken_only_for_a_subscribed_user(database_url: str) -> None:
    database = Database(database_url, settings(database_url))
    await database.open()
    listener, heard = await _listening(database_url, "webhook_deliveries")
    subscribed, other = new_user().id, new_user().id
    try:
        async with database.connection() as connection:
            await connection.execute(
                "INSERT INTO webhook_subscriptions (id, user_id, url, event_types, secret) "
                "VALUES ($1, $2, 'https://example.com/hook', '{task.created}', $3)",
                uuid.uuid4(), subscribed, "s" * 32)
        wake_ups = WakeUps(database, WAKE_SQL)
        wake_ups.send([other])
        await wake_ups.stop()
        await listener.fetchval("SELECT 1")  # notifications sent by now are read by now
        await asyncio.sleep(0.2)
        assert heard.empty()
        wake_ups.send([other, subscribed])
        await wake_ups.stop()
        assert await _drain(heard, 1) == [""]
    finally:
        async with database.connection() as connection:
            await connection.execute("DELETE FROM webhook_subscriptions WHERE user_id = $1",
                                     subscribed)
        await listener.close()
        await database.close()


async def test_a_failed_statement_is_logged_and_the_next_wake_up_still_goes(
    database_url: str,
) -> None:
    database = Database(database_url, settings(database_url))
    await database.open()
    listener, heard = await _listening(database_url, "task_changes")
    try:
        broken = WakeUps(database, "SELECT pg_notify('task_changes', $1::text[]::int::text)")
        broken.send(["not a number"])
        await broken.stop()  # does not raise: the feed watch delivers what it could not
        assert broken.statements == 0
        wake_ups = WakeUps(database, WAKE_SQL)
        user = new_user().id
        wake_ups.send([user])
        await wake_ups.stop()
        assert await _drain(heard, 1) == [user]
    finally:
        await listener.close()
        await database.close()
