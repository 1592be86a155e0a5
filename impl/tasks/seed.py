"""Demo data: two users with fixed ids and five tasks each, in varied states.

A plain run is idempotent (rows with these ids are left as they are); `reset` first deletes
the demo users' tasks and idempotency keys, never anyone else's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

# User ids are opaque strings; the demo users' ids happen to be UUIDs (they predate that), and
# their task ids derive from them, so a seed run after the upgrade still finds its rows.
ALICE = "a11ce000-0000-4000-8000-000000000001"
BOB = "b0b00000-0000-4000-8000-000000000002"
DEMO_USERS = {"alice": ALICE, "bob": BOB}


def _tasks(now: datetime) -> list[dict[str, Any]]:
    day = timedelta(days=1)
    rows = []
    specs = {
        ALICE: [
            ("Buy groceries", "Milk, eggs, bread", False, "high", now + 2 * day, ["home"]),
            ("Write quarterly report", None, False, "medium", now - day, ["work"]),
            ("Book dentist appointment", None, True, "low", None, ["health"]),
            ("Plan weekend trip", "Look at trains first", False, "low", None, []),
            ("Renew passport", None, True, "high", now - 10 * day, ["admin", "travel"]),
        ],
        BOB: [
            ("Fix bike tyre", None, False, "medium", now + day, ["home"]),
            ("Prepare team demo", "Slides and live API", False, "high", now + 3 * day, ["work"]),
            ("Call grandma", None, True, "medium", None, []),
            ("Pay electricity bill", None, False, "high", now - 2 * day, ["admin"]),
            ("Read a novel", None, False, "low", None, ["leisure"]),
        ],
    }
    for user_id, tasks in specs.items():
        for index, (title, description, completed, priority, due, tags) in enumerate(tasks):
            rows.append(
                {
                    "id": uuid.uuid5(uuid.UUID(user_id), f"seed-task-{index}"),
                    "user_id": user_id,
                    "title": title,
                    "description": description,
                    "completed": completed,
                    "priority": priority,
                    "due_date": due,
                    "tags": tags,
                    "created_at": now - (5 - index) * timedelta(hours=1),
                }
            )
    return rows


async def seed(database_url: str, *, reset: bool = False) -> int:
    """Load the demo data; returns how many tasks were inserted."""
    from impl.platform.database import connect_options

    options = connect_options(database_url)
    connection = await asyncpg.connect(options.dsn, statement_cache_size=0)
    try:
        async with connection.transaction():
            users = list(DEMO_USERS.values())
            if reset:
                await connection.execute("DELETE FROM tasks WHERE user_id = ANY($1::text[])", users)
                await connection.execute(
                    "DELETE FROM idempotency_keys WHERE user_id = ANY($1::text[])", users
                )
            inserted = 0
            for row in _tasks(datetime.now(UTC)):
                status = await connection.execute(
                    "INSERT INTO tasks (id, user_id, title, description, completed, completed_at, "
                    "priority, due_date, tags, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, "
                    "CASE WHEN $5 THEN $9::timestamptz END, $6::task_priority, $7, $8, $9, $9) "
                    "ON CONFLICT (id) DO NOTHING",
                    row["id"], row["user_id"], row["title"], row["description"], row["completed"],
                    row["priority"], row["due_date"], row["tags"], row["created_at"],
                )
                inserted += int(status.rsplit(" ", 1)[1])
            return inserted
    finally:
        await connection.close()
