"""user ids are opaque text, not UUIDs

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Better Auth's user ids are 32 random alphanumerics by default (UUIDs, serial numbers and custom
ids occur too), and an existing Better Auth app cannot change its ids. Every table that holds a
user id converts it in place: a UUID becomes its canonical text (the form tokens carried), so
existing users keep their ids, tasks, idempotency keys and counters. The columns take the "C"
collation (byte-for-byte comparison, as an identifier needs) and the same CHECK as the API's
token rule: 1-255 characters, no control characters.

ALTER COLUMN TYPE rewrites each table and its indexes under an exclusive lock: on a large
database, run `task-api migrate` in a quiet moment.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("tasks", "idempotency_keys", "task_counts")
# Frozen here (a migration is a snapshot): the same rule as impl/tasks/tables.py USER_ID_CHECK.
USER_ID_CHECK = (
    r"char_length(user_id) BETWEEN 1 AND 255 AND user_id !~ '[\x01-\x1f\x7f-\x9f]'"
)
# PostgreSQL cannot change the type of a column a trigger's WHEN clause reads (0002's).
COUNT_CHANGES_TRIGGER = """
    CREATE TRIGGER tasks_count_changes AFTER UPDATE ON tasks
    FOR EACH ROW WHEN (
        OLD.user_id IS DISTINCT FROM NEW.user_id
        OR OLD.completed IS DISTINCT FROM NEW.completed
        OR OLD.priority IS DISTINCT FROM NEW.priority
    ) EXECUTE FUNCTION task_counts_apply()
"""


def upgrade() -> None:
    op.execute("DROP TRIGGER tasks_count_changes ON tasks")
    for table in TABLES:
        op.execute(
            f'ALTER TABLE {table} ALTER COLUMN user_id TYPE text COLLATE "C" '
            "USING user_id::text"
        )
        op.create_check_constraint("user_id_valid", table, USER_ID_CHECK)
    op.execute(COUNT_CHANGES_TRIGGER)


def downgrade() -> None:
    """Back to uuid columns: fails (and changes nothing) while any user id is not a UUID."""
    op.execute("DROP TRIGGER tasks_count_changes ON tasks")
    for table in TABLES:
        op.drop_constraint("user_id_valid", table, type_="check")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN user_id TYPE uuid USING user_id::uuid")
    op.execute(COUNT_CHANGES_TRIGGER)
