"""Whose rows a statement may touch: the caller's id, set for one transaction, which PostgreSQL's
row-level security compares with every row's `user_id` (the second wall; migration 0011 and
impl/migrations/row_security.py put the tables behind it, docs/row-security.md says why).

The id is a transaction-local setting (`set_config(..., true)`), never a session one: behind
PgBouncer in transaction mode or Neon's pooler the next transaction may run on a connection
another client used, and a local setting is gone when its transaction ends. A statement that
runs alone (its own implicit transaction, the usual case here) sets it in its own text, with no
extra round trip: `AND <as_caller("$2")>` in its top-level WHERE. That condition holds no
column, so PostgreSQL evaluates it once, as a one-time filter above every scan of the
statement, before any row is read; if a plan ever ran a scan first, that scan would see the
setting empty and return nothing (no user id is empty): the failure is an empty answer, which
the tests would show, never another user's rows.
"""

from __future__ import annotations

from typing import Any

# The role the API connects as (it owns nothing: migrations run as the owner), and the settings
# the policies read. Migrations use the same names (impl/migrations/row_security.py).
API_ROLE = "task_api"
CALLER_SETTING = "task_api.user_id"
# Set only by the SECURITY DEFINER functions through which cross-user work passes (the door it
# names opens for the table owner alone, inside that function).
DOOR_SETTING = "task_api.door"


def as_caller(parameter: str) -> str:
    """The condition that makes the statement it is ANDed into run as the user in `parameter`
    (a placeholder such as "$2" holding the user id)."""
    return f"(SELECT set_config('{CALLER_SETTING}', {parameter}::text, true)) IS NOT NULL"


async def enter_as(connection: Any, user_id: str) -> None:
    """Inside an explicit transaction of several statements: the caller for the rest of it."""
    await connection.fetchval(f"SELECT set_config('{CALLER_SETTING}', $1, true)", user_id)
