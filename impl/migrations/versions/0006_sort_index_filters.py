"""the sort indexes also hold priority and completed: a walk skips the other tasks in the index

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

A listing that filters on priority or status and sorts by another key walks the sort index in
the page's order and tests each task (issue 11). Tested on the table's row, every task of the
range cost a heap visit: `priority=high&q=report&sort=-updated_at` visited about 900 pages of a
user with 100,000 tasks to find 21 matches. With `priority` and `completed` as the last key
columns of each sort index, after `id` (the order stays (user_id, key, id)), PostgreSQL checks
`priority = $n` and `completed = $n` on the index entry and visits only the tasks that pass:
384 pages there, and 179 instead of 459 for `status=completed&tag=work&sort=-priority`.

The index entries grow by 8 bytes. Every write already changed a sorted column (updated_at), so
no update was HOT before: a PATCH of `completed` or `priority` writes the same index entries as
it did. The indexes are rebuilt under an exclusive lock on `tasks`: on a large database, run
`task-api migrate` in a quiet moment.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen here (a migration is a snapshot); impl/tasks/tables.py declares the same indexes.
DUE_ASC = "COALESCE(due_date, 'infinity'::timestamptz)"
DUE_DESC = "COALESCE(due_date, '-infinity'::timestamptz)"
# name -> (key columns before, key columns after)
INDEXES = {
    "ix_tasks_user_created": ("user_id, created_at, id",
                              "user_id, created_at, id, priority, completed"),
    "ix_tasks_user_completed_created": ("user_id, completed, created_at, id",
                                        "user_id, completed, created_at, id, priority"),
    "ix_tasks_user_updated": ("user_id, updated_at, id",
                              "user_id, updated_at, id, priority, completed"),
    "ix_tasks_user_due": (f"user_id, {DUE_ASC}, id",
                          f"user_id, {DUE_ASC}, id, priority, completed"),
    "ix_tasks_user_due_desc": (f"user_id, {DUE_DESC}, id",
                               f"user_id, {DUE_DESC}, id, priority, completed"),
    "ix_tasks_user_priority": ("user_id, priority, id", "user_id, priority, id, completed"),
    "ix_tasks_user_title": ("user_id, title, id", "user_id, title, id, priority, completed"),
}


def _rebuild(which: int) -> None:
    for name, columns in INDEXES.items():
        op.execute(f"DROP INDEX {name}")
        op.execute(f"CREATE INDEX {name} ON tasks ({columns[which]})")


def upgrade() -> None:
    _rebuild(1)


def downgrade() -> None:
    _rebuild(0)
