"""row-level security: every table of users' rows answers only the transaction's caller

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-07

The second wall behind the store's `user_id` argument (issue 32; docs/row-security.md): a
statement that forgot its user condition still reads and changes only the caller's rows, because
PostgreSQL itself compares each row's user_id with the caller set for the transaction
(impl/platform/row_scope.py). The API connects as the role `task_api`, which owns nothing and
cannot switch the wall off; RLS is forced, so the owner is held too.

Two doors let work that must cross users through, each a SECURITY DEFINER function that only the
API role may call and that does one thing:
- task_api_locate_task(task_id, caller): 'own', 'foreign' or NULL (no such task). A request for
  another user's task answers 403 rather than 404 (the contract says so); it learns no more.
- task_api_purge_tombstones(older_than): deletes the tombstones older than that, across users
  (every replica purges, impl/tasks/changes.py), and says how many.
"""

from __future__ import annotations

from impl.migrations import row_security

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None

USER_TABLES = (
    "tasks", "idempotency_keys", "task_counts", "task_tag_counts", "task_tags", "task_tombstones",
)
LOCATE = "task_api_locate_task(task_id uuid, caller text)"
PURGE = "task_api_purge_tombstones(older_than interval)"


def upgrade() -> None:
    for table in USER_TABLES:
        row_security.protect(table)
    row_security.door("tasks", "locate_task")
    row_security.door_function(
        LOCATE, "locate_task", "text",
        "SELECT CASE WHEN t.user_id = caller THEN 'own' ELSE 'foreign' END INTO result "
        "FROM public.tasks AS t WHERE t.id = task_id;",
    )
    row_security.door("task_tombstones", "purge_tombstones", ("SELECT", "DELETE"))
    row_security.door_function(
        PURGE, "purge_tombstones", "bigint",
        "WITH gone AS (DELETE FROM public.task_tombstones "
        "WHERE deleted_at < now() - older_than RETURNING 1) SELECT count(*) INTO result FROM gone;",
    )


def downgrade() -> None:
    from alembic import op

    op.execute("DROP FUNCTION task_api_purge_tombstones(interval)")
    row_security.close_door("task_tombstones", "purge_tombstones", ("SELECT", "DELETE"))
    op.execute("DROP FUNCTION task_api_locate_task(uuid, text)")
    row_security.close_door("tasks", "locate_task")
    for table in reversed(USER_TABLES):
        row_security.unprotect(table)
