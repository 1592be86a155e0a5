"""Never skip a change: a transaction that took its place in the order first (the lower
transaction id) but commits after a faster one must still reach a device that synced in between.

Interleaved by hand on two direct connections: A begins and takes xid a, B writes and commits
(xid b > a), the device syncs and sees B only, then A writes and commits. A feed that remembered
"the highest id read" would now skip A for ever; the sync token holds B's reader's snapshot,
in which A was still running (its xip list), so pg_visible_in_snapshot(a, token) is false and
A's change comes with the next sync (impl/tasks/changes.py explains the mechanism).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest

from impl.platform.database import connect_options
from tests.support.devices import Device, database_copy, stored
from tests.support.factories import User

Write = Callable[[asyncpg.Connection, User, uuid.UUID], Awaitable[None]]


async def _insert(connection: asyncpg.Connection, user: User, task_id: uuid.UUID) -> None:
    await connection.execute(
        "INSERT INTO tasks (id, user_id, title) VALUES ($1, $2, 'slow writer')", task_id, user.id
    )


async def _update(connection: asyncpg.Connection, user: User, task_id: uuid.UUID) -> None:
    await connection.execute(
        "UPDATE tasks SET title = 'slow writer', version = version + 1, "
        "change_xid = pg_current_xact_id() WHERE id = $1 AND user_id = $2", task_id, user.id,
    )


async def _delete(connection: asyncpg.Connection, user: User, task_id: uuid.UUID) -> None:
    await connection.execute("DELETE FROM tasks WHERE id = $1 AND user_id = $2", task_id, user.id)


@pytest.mark.parametrize("slow_write", [_insert, _update, _delete], ids=["create", "edit", "delete"])
async def test_a_change_committed_late_by_a_slower_transaction_is_not_skipped(
    client: httpx.AsyncClient, database_url: str, alice: User, db: asyncpg.Connection,
    slow_write: Write,
) -> None:
    existing = uuid.uuid4()
    await _insert(db, alice, existing)
    device = Device(alice)
    await device.sync(client)
    slow_task = uuid.uuid4() if slow_write is _insert else existing

    dsn = connect_options(database_url).dsn
    slow, fast = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        slow_tx = slow.transaction()
        await slow_tx.start()
        # The slow transaction takes the lower id first, as a create with an Idempotency-Key
        # does when it claims its key before it inserts (impl/tasks/store.py). Its task write
        # comes later: a user's writes queue on their counter row (migration 0002), so two
        # task writes of one user cannot both be in flight.
        slow_xid = int(await slow.fetchval("SELECT pg_current_xact_id()::text"))

        fast_task = uuid.uuid4()
        async with fast.transaction():
            await _insert(fast, alice, fast_task)
            fast_xid = int(await fast.fetchval("SELECT pg_current_xact_id()::text"))
        assert slow_xid < fast_xid  # the order the ids give is not the commit order

        (page,) = await device.sync(client)  # sees the fast commit only
        assert [task["id"] for task in page["tasks"]] == [str(fast_task)]
        assert page["deleted"] == []
        highest_read = fast_xid

        await slow_write(slow, alice, slow_task)
        await slow_tx.commit()
    finally:
        await slow.close()
        await fast.close()

    # What a counter would have done: nothing above the highest id read is the slow change.
    newer = await db.fetchval(
        "SELECT count(*) FROM tasks WHERE user_id = $1 AND change_xid > $2::text::xid8",
        alice.id, str(highest_read),
    )
    assert newer == 0

    (page,) = await device.sync(client)
    if slow_write is _delete:
        assert [gone["id"] for gone in page["deleted"]] == [str(existing)]
        assert page["tasks"] == []
    else:
        assert [task["id"] for task in page["tasks"]] == [str(slow_task)]
        assert page["tasks"][0]["title"] == "slow writer"
    assert stored(device) == await database_copy(db, alice)
