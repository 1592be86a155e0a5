"""recurring tasks and reminders: a rule, a time zone and reminders on each task; a table of the
reminders to fire, kept by a trigger

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

A task's `recurrence` (an RFC 5545 RRULE), `time_zone` (IANA) and `reminders` (a JSON array of
{"at": instant} or {"minutes_before": n}) are plain columns: the API returns them with the task
and every list reads them for free. What fires is derived: `task_reminders` holds one row per
reminder instant still to come, written by an AFTER trigger in the same transaction as the task
write, so a reminder is scheduled if and only if the write committed. The trigger's WHEN clauses
keep PL/pgSQL out of every write that does not touch reminders, the due date or completion
(evaluated in C, no function call); AFTER, not BEFORE, for the reason migration 0007 gives.

The scheduler of every replica claims due rows with FOR UPDATE SKIP LOCKED and stamps them fired
with its transaction id (impl/tasks/reminder_scheduler.py): the change feed then reads fired
reminders the way it reads tombstones, by snapshot.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Frozen here (a migration is a snapshot): impl/platform/user_ids.py says the same.
USER_ID_CHECK = r"char_length(user_id) BETWEEN 1 AND 255 AND user_id !~ '[\x01-\x1f\x7f-\x9f]'"
NOT_EMPTY = "'[]'::jsonb"


def upgrade() -> None:
    op.execute(
        "ALTER TABLE tasks "
        "ADD COLUMN recurrence text, ADD COLUMN time_zone text, "
        f"ADD COLUMN reminders jsonb NOT NULL DEFAULT {NOT_EMPTY}, "
        "ADD COLUMN series_id uuid, ADD COLUMN next_occurrence_id uuid, ADD COLUMN wall_time time, "
        "ADD CONSTRAINT recurrence_needs_due_date_and_zone CHECK "
        "(recurrence IS NULL OR (due_date IS NOT NULL AND time_zone IS NOT NULL)), "
        "ADD CONSTRAINT relative_reminder_needs_due_date CHECK "
        "(due_date IS NOT NULL OR NOT jsonb_path_exists(reminders, '$[*].minutes_before')), "
        "ADD CONSTRAINT reminder_count CHECK "
        "(jsonb_typeof(reminders) = 'array' AND jsonb_array_length(reminders) <= 5), "
        "ADD CONSTRAINT recurrence_length CHECK (char_length(recurrence) <= 500), "
        "ADD CONSTRAINT time_zone_length CHECK (char_length(time_zone) <= 64)"
    )
    op.execute(
        f"""
        CREATE TABLE task_reminders (
            user_id text COLLATE "C" NOT NULL,
            task_id uuid NOT NULL,
            id uuid NOT NULL,
            remind_at timestamptz NOT NULL,
            fired_at timestamptz,
            change_xid xid8,
            PRIMARY KEY (user_id, task_id, id),
            CONSTRAINT user_id_valid CHECK ({USER_ID_CHECK})
        )
        """
    )
    op.execute("CREATE INDEX ix_task_reminders_pending ON task_reminders (remind_at) "
               "WHERE fired_at IS NULL")
    op.execute("CREATE INDEX ix_task_reminders_user_change ON task_reminders "
               "(user_id, change_xid, id) WHERE change_xid IS NOT NULL")
    op.execute("CREATE INDEX ix_task_reminders_fired_at ON task_reminders USING brin (fired_at)")
    # Pending reminders of the task are replaced by what its row now says: none once it is
    # completed or deleted; instants already past when written are not scheduled (a reminder
    # set for yesterday does not fire now). Fired ones stay, for the change feed, until purged.
    op.execute(
        """
        CREATE FUNCTION task_reminders_schedule() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' THEN
                DELETE FROM task_reminders
                WHERE user_id = OLD.user_id AND task_id = OLD.id AND fired_at IS NULL;
            END IF;
            IF TG_OP <> 'DELETE' AND NOT NEW.completed THEN
                INSERT INTO task_reminders (user_id, task_id, id, remind_at)
                SELECT DISTINCT ON (s.at) NEW.user_id, NEW.id, gen_random_uuid(), s.at
                FROM (
                    SELECT CASE WHEN r ? 'at' THEN (r ->> 'at')::timestamptz
                                ELSE NEW.due_date
                                     - make_interval(mins => (r ->> 'minutes_before')::int)
                           END AS at
                    FROM jsonb_array_elements(NEW.reminders) AS r
                ) AS s
                WHERE s.at > now();
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER tasks_reminders_insert AFTER INSERT ON tasks FOR EACH ROW "
        f"WHEN (NEW.reminders <> {NOT_EMPTY}) EXECUTE FUNCTION task_reminders_schedule()"
    )
    op.execute(
        "CREATE TRIGGER tasks_reminders_update AFTER UPDATE ON tasks FOR EACH ROW "
        f"WHEN ((OLD.reminders <> {NOT_EMPTY} OR NEW.reminders <> {NOT_EMPTY}) AND ("
        "OLD.reminders IS DISTINCT FROM NEW.reminders "
        "OR OLD.due_date IS DISTINCT FROM NEW.due_date OR OLD.completed <> NEW.completed)) "
        "EXECUTE FUNCTION task_reminders_schedule()"
    )
    op.execute(
        "CREATE TRIGGER tasks_reminders_delete AFTER DELETE ON tasks FOR EACH ROW "
        f"WHEN (OLD.reminders <> {NOT_EMPTY}) EXECUTE FUNCTION task_reminders_schedule()"
    )


def downgrade() -> None:
    for trigger in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER tasks_reminders_{trigger} ON tasks")
    op.execute("DROP FUNCTION task_reminders_schedule()")
    op.drop_table("task_reminders")
    op.execute(
        "ALTER TABLE tasks "
        "DROP COLUMN recurrence, DROP COLUMN time_zone, DROP COLUMN reminders, "
        "DROP COLUMN series_id, DROP COLUMN next_occurrence_id, DROP COLUMN wall_time"
    )
