"""Demo data: two users with fixed ids and their tasks in varied states (one recurring, with a
reminder).

A plain run is idempotent (rows with these ids are left as they are); `reset` first deletes
the demo users' tasks and idempotency keys, never anyone else's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from impl.platform.database import connect_options, set_codecs
from impl.platform.row_scope import enter_as
from impl.tasks import store
from impl.tasks.columns import WRITABLE
from impl.tasks.tables import Task

# User ids are opaque strings; the demo users' ids happen to be UUIDs (they predate that), and
# their task ids derive from them, so a seed run after the upgrade still finds its rows.
ALICE = "a11ce000-0000-4000-8000-000000000001"
BOB = "b0b00000-0000-4000-8000-000000000002"
DEMO_USERS = {"alice": ALICE, "bob": BOB}
BERLIN = ZoneInfo("Europe/Berlin")


def demo_tasks(now: datetime) -> list[dict[str, Any]]:
    """Each task by field name; a writable field left out takes the table's default."""
    day = timedelta(days=1)
    specs: dict[str, list[dict[str, Any]]] = {
        ALICE: [
            {"title": "Buy groceries", "description": "Milk, eggs, bread", "priority": "high",
             "due_date": now + 2 * day, "tags": ["home"]},
            {"title": "Write quarterly report", "due_date": now - day, "tags": ["work"]},
            {"title": "Book dentist appointment", "completed": True, "priority": "low",
             "tags": ["health"]},
            {"title": "Plan weekend trip", "description": "Look at trains first",
             "priority": "low"},
            {"title": "Renew passport", "completed": True, "priority": "high",
             "due_date": now - 10 * day, "tags": ["admin", "travel"]},
            # Recurring, with a reminder: completing it makes next Monday's.
            {"title": "Water the plants", "tags": ["home"], "due_date": _next_monday_9(now),
             "time_zone": "Europe/Berlin", "recurrence": "FREQ=WEEKLY;BYDAY=MO",
             "reminders": [{"minutes_before": 30}]},
        ],
        BOB: [
            {"title": "Fix bike tyre", "due_date": now + day, "tags": ["home"]},
            {"title": "Prepare team demo", "description": "Slides and live API",
             "priority": "high", "due_date": now + 3 * day, "tags": ["work"]},
            {"title": "Call grandma", "completed": True},
            {"title": "Pay electricity bill", "priority": "high", "due_date": now - 2 * day,
             "tags": ["admin"]},
            {"title": "Read a novel", "priority": "low", "tags": ["leisure"]},
        ],
    }
    rows = []
    for user_id, tasks in specs.items():
        for index, spec in enumerate(tasks):
            unknown = set(spec) - set(WRITABLE)
            assert not unknown, f"not writable fields of a task: {unknown}"
            rows.append(
                {
                    "id": uuid.uuid5(uuid.UUID(user_id), f"seed-task-{index}"),
                    "user_id": user_id,
                    **{name: spec.get(name, _default(name)) for name in WRITABLE},
                    "created_at": now - (5 - index) * timedelta(hours=1),
                }
            )
    return rows


def _next_monday_9(now: datetime) -> datetime:
    """The next Monday at 09:00 in Berlin after `now` (the seed's recurring task)."""
    local = now.astimezone(BERLIN)
    monday = (local + timedelta(days=(7 - local.weekday()) % 7 or 7)).date()
    return datetime.combine(monday, time(9), tzinfo=BERLIN).astimezone(UTC)


def _default(name: str) -> Any:
    return Task.model_fields[name].get_default(call_default_factory=True)


# The store's insert (its columns and casts derive from the table) with one more parameter, the
# creation time: completed_at (for a completed task), created_at and updated_at.
# A recurring task starts its series, as the API's insert does.
_CREATED = f"${len(store.INSERT_PARAMETERS) + 1}::timestamptz"
INSERT_SQL = (
    f"INSERT INTO tasks ({', '.join(store.INSERT_COLUMNS)}, completed_at, created_at, updated_at, "
    f"series_id) VALUES ({', '.join(store.INSERT_PARAMETERS)}, CASE WHEN {store.COMPLETED} THEN "
    f"{_CREATED} END, {_CREATED}, {_CREATED}, CASE WHEN {store.RECURRENCE} IS NOT NULL THEN "
    "$1::uuid END) ON CONFLICT (id) DO NOTHING"
)


async def seed(database_url: str, *, reset: bool = False, now: datetime | None = None) -> int:
    """Load the demo data (due dates and creation times around `now`, the current time by
    default); returns how many tasks were inserted."""
    options = connect_options(database_url)
    connection = await asyncpg.connect(options.dsn, statement_cache_size=0)
    await set_codecs(connection)
    try:
        async with connection.transaction():
            if reset:
                for user in DEMO_USERS.values():
                    await enter_as(connection, user)  # row-level security: one user at a time
                    await connection.execute("DELETE FROM tasks WHERE user_id = $1", user)
                    await connection.execute(
                        "DELETE FROM idempotency_keys WHERE user_id = $1", user
                    )
            inserted = 0
            for row in demo_tasks(now or datetime.now(UTC)):
                await enter_as(connection, row["user_id"])
                args = store.insert_args(row["id"], row["user_id"], row)
                status = await connection.execute(INSERT_SQL, *args, row["created_at"])
                inserted += int(status.rsplit(" ", 1)[1])
            return inserted
    finally:
        await connection.close()
