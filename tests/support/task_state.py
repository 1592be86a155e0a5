"""A user's tasks as PostgreSQL holds them, and a client's JSON copy in the same terms, so a
test compares the two field by field (every field the API returns, from impl/tasks/columns.py).
Date-times are compared as instants (the API writes RFC 3339 text, PostgreSQL returns
datetimes), ids as text."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from impl.tasks.columns import DATETIMES, FIELDS, select_list


async def tasks_in_database(connection: asyncpg.Connection, user_id: str
                            ) -> dict[str, dict[str, Any]]:
    rows = await connection.fetch(
        f"SELECT {select_list()} FROM tasks WHERE user_id = $1", user_id)
    return {str(row["id"]): {name: _plain(row[name]) for name in FIELDS} for row in rows}


def as_stored(tasks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A client's copy (id -> task as JSON) in the terms of tasks_in_database()."""
    return {
        task_id: {name: (datetime.fromisoformat(task[name])
                         if name in DATETIMES and task[name] is not None else task[name])
                  for name in FIELDS}
        for task_id, task in tasks.items()
    }


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value
