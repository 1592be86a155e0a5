"""Recording an event for the webhooks, inside the caller's own transaction.

Task events are recorded by the database itself (the tasks' trigger, migration 0010). Anything
else that should reach the users' webhooks (a reminder coming due) calls `record_event` on the
connection of the transaction that makes it happen: the deliveries commit with it, or not at all.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson


async def record_event(
    connection: asyncpg.Connection, user_id: str, event_type: str, data: dict[str, Any]
) -> int:
    """One delivery per enabled subscription of `user_id` that wants `event_type` (one of
    impl/webhooks/tables.py's EVENT_TYPES, e.g. "reminder.due"), whose body is
    {type, timestamp, data}; returns how many. The workers are woken at commit."""
    recorded: int = await connection.fetchval(
        "SELECT webhook_record_event($1, $2, $3::text::jsonb)",  # text: whatever codecs
        user_id, event_type, orjson.dumps(data).decode(),
    )
    return recorded
