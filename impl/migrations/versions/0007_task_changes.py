"""change tracking: every task write records its transaction, every delete leaves a tombstone

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

The change feed and the live stream (issue 27, impl/tasks/changes.py) read what changed in a
user's tasks since a sync token. Each task carries the id of the transaction that last wrote it
(`change_xid`, an xid8: 64 bits, never wraps), set by the column's default on insert and by
every UPDATE statement (`change_xid = pg_current_xact_id()`, impl/tasks/store.py); each delete
leaves a row in `task_tombstones` with its own transaction id.

Not a BEFORE UPDATE trigger: with any BEFORE ROW UPDATE trigger on a table, PostgreSQL recomputes
every stored generated column on every update (it cannot know what the trigger changed), and
`search` is a tsvector of the whole text: a PATCH of `completed` cost 170-210 us more of the
database's CPU that way, 80-180 us more than stamping in the statement (docs/perf/write-cost.md).
So the statement stamps, and the AFTER trigger refuses an UPDATE that did not: no write can
escape the feed by forgetting it.
A token holds a PostgreSQL snapshot, and "changed since" means "written by a transaction that
the token's snapshot did not see" (pg_visible_in_snapshot): a slower transaction that took a
lower id and commits after a faster one was not visible in the token's snapshot, so it is still
found next time. A sequence number could not say that.

The same trigger sends NOTIFY task_changes with the user id: PostgreSQL delivers it when the
transaction commits (never for a rollback), to every replica that LISTENs, which wakes the
streams of that user (impl/platform/notifications.py).

Adding the column rewrites `tasks` under an exclusive lock (a volatile default): the existing
tasks all get the migration's transaction id, so a device's first sync after it sees them once.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Frozen here (a migration is a snapshot): impl/platform/user_ids.py says the same.
USER_ID_CHECK = r"char_length(user_id) BETWEEN 1 AND 255 AND user_id !~ '[\x01-\x1f\x7f-\x9f]'"


def upgrade() -> None:
    op.execute(
        "ALTER TABLE tasks ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id()"
    )
    op.execute("CREATE INDEX ix_tasks_user_change ON tasks (user_id, change_xid, id)")
    op.execute(
        f"""
        CREATE TABLE task_tombstones (
            user_id text COLLATE "C" NOT NULL,
            change_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
            task_id uuid NOT NULL,
            deleted_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, change_xid, task_id),
            CONSTRAINT user_id_valid CHECK ({USER_ID_CHECK})
        )
        """
    )
    # Tombstones are written in deletion order: a BRIN index finds the old ones to purge for
    # next to nothing per delete.
    op.execute("CREATE INDEX ix_task_tombstones_deleted_at ON task_tombstones "
               "USING brin (deleted_at)")
    # One statement per execute: asyncpg prepares each.
    op.execute(
        """
        CREATE FUNCTION task_change_record() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                INSERT INTO task_tombstones (user_id, task_id) VALUES (OLD.user_id, OLD.id);
                PERFORM pg_notify('task_changes', OLD.user_id);
                RETURN NULL;
            END IF;
            IF TG_OP = 'UPDATE' AND NEW.change_xid IS DISTINCT FROM pg_current_xact_id() THEN
                RAISE EXCEPTION 'an UPDATE of tasks must set change_xid = pg_current_xact_id()'
                    USING HINT = 'the change feed finds changed tasks by it (migration 0007)';
            END IF;
            PERFORM pg_notify('task_changes', NEW.user_id);
            RETURN NULL;
        END $$
        """
    )
    op.execute("CREATE TRIGGER tasks_change_record AFTER INSERT OR UPDATE OR DELETE ON tasks "
               "FOR EACH ROW EXECUTE FUNCTION task_change_record()")


def downgrade() -> None:
    op.execute("DROP TRIGGER tasks_change_record ON tasks")
    op.execute("DROP FUNCTION task_change_record()")
    op.drop_table("task_tombstones")
    op.execute("DROP INDEX ix_tasks_user_change")
    op.execute("ALTER TABLE tasks DROP COLUMN change_xid")
