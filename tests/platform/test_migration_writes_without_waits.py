"""Migration 0010 (no NOTIFY in a write, counters in slots) on a database in use: every counter
keeps its sum, writes on different connections add to different rows and the sums stay exact, a
write no longer notifies, and the way back folds the slots into one row per user (and tag) and
notifies again."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from alembic import command

from impl.platform.database import connect_options
from impl.platform.migrate import alembic_config, upgrade
from tests.support.factories import COUNTERS, RECOUNT, RECOUNT_TAGS

USERS = ("a11ce000-0000-4000-8000-000000000001", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY")
_SUMS = ", ".join(f"sum({name})" for name in COUNTERS)
TOTALS = f"SELECT user_id, {_SUMS} FROM task_counts GROUP BY user_id ORDER BY 1"
TAG_TOTALS = f"SELECT user_id, tag, {_SUMS} FROM task_tag_counts GROUP BY 1, 2 ORDER BY 1, 2"


async def _insert(connection: asyncpg.Connection, user: str, index: int) -> None:
    await connection.execute(
        "INSERT INTO tasks (id, user_id, title, priority, tags, completed, completed_at) "
        "VALUES ($1, $2, $3, $4::task_priority, $5, $6, CASE WHEN $6 THEN now() END)",
        uuid.uuid4(), user, f"task {index}", ("low", "medium", "high")[index % 3],
        [["home", "work"], ["home"], []][index % 3], index % 2 == 0,
    )


async def _notified_by_a_write(listener: asyncpg.Connection, writer: asyncpg.Connection,
                               user: str) -> bool:
    heard: asyncio.Queue[str] = asyncio.Queue()

    def on_notification(*args: object) -> None:
        heard.put_nowait(str(args[3]))

    await listener.add_listener("task_changes", on_notification)
    try:
        await _insert(writer, user, 99)
        try:
            await asyncio.wait_for(heard.get(), 1.0)
        except TimeoutError:
            return False
        return True
    finally:
        await listener.remove_listener("task_changes", on_notification)


async def test_upgrade_keeps_the_sums_writes_spread_over_slots_and_downgrade_folds_them(
    fresh_database: str,
) -> None:
    await asyncio.to_thread(upgrade, fresh_database, "0009")
    dsn = connect_options(fresh_database).dsn
    connection = await asyncpg.connect(dsn)
    others = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        for owner, user in enumerate(USERS):
            for index in range(6 + owner):
                await _insert(connection, user, index)
        assert await _notified_by_a_write(others[0], connection, USERS[0])
        totals, tag_totals = await connection.fetch(TOTALS), await connection.fetch(TAG_TOTALS)
        assert totals and tag_totals

        await asyncio.to_thread(upgrade, fresh_database, "0010")
        # The existing rows are slot 0 of their user, the sums unchanged.
        assert await connection.fetchval("SELECT count(*) FROM task_counts WHERE slot <> 0") == 0
        assert await connection.fetch(TOTALS) == totals
        assert await connection.fetch(TAG_TOTALS) == tag_totals
        assert await connection.fetch(RECOUNT) == []
        assert await connection.fetch(RECOUNT_TAGS) == []

        # Writes of one user on several connections: each adds to its session's slot, exactly.
        pids = {await other.fetchval("SELECT pg_backend_pid() % 16") for other in others}
        await asyncio.gather(*(_insert(other, USERS[0], 100 + n) for n, other in
                               enumerate(others)))
        await others[1].execute(
            "UPDATE tasks SET completed = true, completed_at = now(), priority = 'high', "
            "tags = '{work,new}', change_xid = pg_current_xact_id() WHERE user_id = $1 "
            "AND title = 'task 1'", USERS[0])
        await others[2].execute("DELETE FROM tasks WHERE user_id = $1 AND title = 'task 2'",
                                USERS[0])
        slots = await connection.fetch("SELECT slot FROM task_counts WHERE user_id = $1",
                                       USERS[0])
        assert pids <= {row["slot"] for row in slots}
        assert await connection.fetch(RECOUNT) == []
        assert await connection.fetch(RECOUNT_TAGS) == []
        # A write no longer notifies (the API sends its wake-ups after the commit), and an
        # UPDATE that does not stamp change_xid is still refused (now by a WHEN clause).
        assert not await _notified_by_a_write(others[0], connection, USERS[0])
        with pytest.raises(asyncpg.RaiseError, match="must set change_xid"):
            await connection.execute("UPDATE tasks SET title = 'unstamped' WHERE user_id = $1",
                                     USERS[0])
        await connection.execute("DELETE FROM tasks WHERE user_id = $1 AND title = 'task 3'",
                                 USERS[0])
        assert await connection.fetchval("SELECT count(*) FROM task_tombstones") == 2
        before_downgrade = await connection.fetch(TOTALS), await connection.fetch(TAG_TOTALS)

        await asyncio.to_thread(command.downgrade, alembic_config(fresh_database), "0009")
        assert (await connection.fetch(TOTALS), await connection.fetch(TAG_TOTALS)) == \
            before_downgrade
        assert await connection.fetchval(
            "SELECT count(*) = count(DISTINCT user_id) FROM task_counts") is True
        assert await connection.fetch(RECOUNT) == []
        assert await connection.fetch(RECOUNT_TAGS) == []
        assert await _notified_by_a_write(others[0], connection, USERS[1])
        assert await connection.fetch(RECOUNT) == []
        with pytest.raises(asyncpg.RaiseError, match="must set change_xid"):
            await connection.execute("UPDATE tasks SET title = 'unstamped'")
    finally:
        for other in others:
            await other.close()
        await connection.close()
