"""What load.py's users were told (its --state file) against what the database holds."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import asyncpg

from impl.platform.database import connect_options


async def differences(database_url: str, state: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """(users whose rows differ from what they were acknowledged, rows of these users), read on
    a direct connection. A user with an unknown outcome (`uncertain`: a write failed) is not
    compared: its last write may or may not have happened."""
    connection = await asyncpg.connect(connect_options(database_url).dsn)
    try:
        rows = await connection.fetch(
            "SELECT id, user_id, title, completed, version FROM tasks "
            "WHERE user_id = ANY($1::text[])", list(state),
        )
    finally:
        await connection.close()
    actual: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        actual[str(row["user_id"])][str(row["id"])] = {
            "title": row["title"], "completed": row["completed"], "version": row["version"],
        }
    differing = {
        user_id: {"expected": user["tasks"], "in_database": actual.get(user_id, {})}
        for user_id, user in state.items()
        if not user["uncertain"] and actual.get(user_id, {}) != user["tasks"]
    }
    return differing, len(rows)
