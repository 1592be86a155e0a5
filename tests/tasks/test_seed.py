"""The demo data lands as written: every field of every seeded task, read back by name."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from impl.platform.database import connect_options, set_codecs
from impl.platform.migrate import upgrade
from impl.tasks.columns import WRITABLE
from impl.tasks.seed import demo_tasks, seed
from impl.tasks.store import COLUMNS


async def test_seeded_tasks_hold_every_field_of_the_demo_data(fresh_database: str) -> None:
    await asyncio.to_thread(upgrade, fresh_database)  # Alembic runs its own event loop
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert await seed(fresh_database, now=now) == 11
    expected = {row["id"]: row for row in demo_tasks(now)}
    connection = await asyncpg.connect(connect_options(fresh_database).dsn)
    await set_codecs(connection)
    try:
        stored = {r["id"]: dict(r) for r in await connection.fetch(f"SELECT {COLUMNS} FROM tasks")}
    finally:
        await connection.close()
    assert stored.keys() == expected.keys()
    for task_id, row in expected.items():
        task = stored[task_id]
        for name in (*WRITABLE, "user_id", "created_at"):
            assert task[name] == row[name], (row["title"], name)
        assert task["updated_at"] == row["created_at"]
        assert task["completed_at"] == (row["created_at"] if row["completed"] else None)
        assert task["series_id"] == (task_id if row["recurrence"] else None)
    plants = next(row for row in expected.values() if row["recurrence"])
    assert plants["due_date"] == datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # Monday 09:00 Berlin
