"""A recurring task's next occurrence, made in the transaction that completes it.

The completing UPDATE (impl/tasks/store.py) has already claimed the new task's id in the
completed task's `next_occurrence_id` under its row lock: whatever way the completion arrives
(a PATCH, a PUT, a retry, two devices at once), one statement wins the claim and makes the next
occurrence; the others find the claim taken. Here the rule gives the next due date; when the
series has ended (COUNT reached, past UNTIL) the claim is let go and nothing is made.
"""

from __future__ import annotations

import uuid
from datetime import time
from typing import Any

from impl.tasks import recurrence, reminders
from impl.tasks.columns import WRITABLE

# What the next occurrence copies from the completed one; the rest is its own.
COPIED = ("title", "description", "priority", "tags", "time_zone")


def next_fields(task: dict[str, Any]) -> tuple[dict[str, Any], time | None] | None:
    """The writable fields of the occurrence after `task` and its series' wall time (when its
    due date cannot show it), or None when the series ends."""
    following = recurrence.next_occurrence(
        task["due_date"], task["recurrence"], task["time_zone"], task["wall_time"]
    )
    if following is None:
        return None
    fields = {name: task[name] for name in COPIED}
    fields.update(
        completed=False, due_date=following.due, recurrence=following.rule,
        reminders=reminders.moved(task["reminders"], following.due - task["due_date"]),
    )
    assert set(fields) == set(WRITABLE), "a new writable column: say whether it is copied"
    return fields, following.wall_time


async def make_next(connection: Any, task: dict[str, Any]) -> dict[str, Any]:
    """Insert the occurrence after the completed `task` (its claimed id), or let the claim go.
    Returns the completed task as it now is."""
    from impl.tasks.store import SPAWN_SQL, UNCLAIM_SQL, insert_args  # store imports this module

    following = next_fields(task)
    if following is None:
        return dict(await connection.fetchrow(UNCLAIM_SQL, task["id"], task["user_id"]))
    fields, wall_time = following
    series: uuid.UUID = task["series_id"] or task["id"]
    args = insert_args(task["next_occurrence_id"], task["user_id"], fields)
    await connection.fetchval(SPAWN_SQL, *args, series, wall_time)
    return task
