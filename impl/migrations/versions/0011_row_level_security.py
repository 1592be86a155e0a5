"""row-level security: every table of users' rows answers only the transaction's caller

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

The second wall behind the store's `user_id` argument (issue 32; docs/row-security.md): a
statement that forgot its user condition still reads and changes only the caller's rows, because
PostgreSQL itself compares each row's user_id with the caller set for the transaction
(impl/platform/row_scope.py). The API connects as the role `task_api`, which owns nothing and
cannot switch the wall off; RLS is forced, so the owner is held too.

The triggers that run inside a user's write (counters, tags, tombstones, reminders' schedule,
the webhook outbox) run as the writer, under the same caller: they touch only that user's rows.

Work that must cross users goes through doors, each a SECURITY DEFINER function that only the
API role may call and that does one job (the statements are frozen here, as a migration is):
- task_api_locate_task(task_id, caller), task_api_locate_webhook(webhook_id, caller): 'own',
  'foreign' or NULL (none). A request for another user's task or webhook answers 403 rather
  than 404 (the contract says so); it learns no more.
- task_api_purge_changes(older_than): deletes the tombstones and fired reminders older than
  that, across users (every replica purges, impl/tasks/changes.py), and says how many.
- task_api_claim_reminders(batch), task_api_next_reminder_in(): the reminder scheduler's claim
  (fires due reminders, records `reminder.due` for their webhooks; no NOTIFY, as migration 0010
  wants: the scheduler wakes the users it names after the claim commits) and its wait
  (impl/tasks/reminder_scheduler.py).
- task_api_changed_users(users, seen): the feed watch's poll (migration 0010,
  impl/tasks/feed_watch.py): which of the users with a stream open on a replica had a change
  that the previous poll's snapshot did not see, and this poll's snapshot.
- task_api_any_subscribed(users): whether any of the users has an enabled webhook subscription
  (the wake-ups after a write, impl/tasks/change_wake_ups.py); it says no more than that.
- task_api_claim_deliveries(how_many, cap, lease), task_api_finish_delivery(...),
  task_api_purge_deliveries(older_than): the webhook delivery queue (impl/webhooks/queue.py).

The sort indexes are rebuilt on leakproof keys. Under row-level security PostgreSQL runs the
policy's condition before any condition of the query that is not leakproof, so only leakproof
ones can be index conditions. The due-date expressions were COALESCE (leaky, whatever it holds):
now a CASE with IS NULL (leakproof, same values). `priority` is an enum, whose comparisons are
leaky: the indexes now hold its rank, `CASE priority WHEN 'low' THEN 1 ... END`, an integer
(the enum's equality there applies to no column of the row, which PostgreSQL accepts), so a
priority filter is checked on the index entry and a cursor in priority order bounds the range,
as before the wall. Rebuilt under an exclusive lock on `tasks`, like migration 0006: on a large
database, run `task-api migrate` in a quiet moment.
"""

from __future__ import annotations

from alembic import op

from impl.migrations import row_security

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

USER_TABLES = (
    "tasks", "idempotency_keys", "task_counts", "task_tag_counts", "task_tags", "task_tombstones",
    "task_reminders", "webhook_subscriptions", "webhook_deliveries",
)
# The sort indexes: 0006's, and this migration's (frozen: impl/tasks/tables.py declares the same).
RANK = ("CASE priority WHEN 'low'::task_priority THEN 1 WHEN 'medium'::task_priority THEN 2 "
        "WHEN 'high'::task_priority THEN 3 ELSE NULL::integer END")
OLD_DUE_ASC = "COALESCE(due_date, 'infinity'::timestamptz)"
OLD_DUE_DESC = "COALESCE(due_date, '-infinity'::timestamptz)"
DUE_ASC = "(CASE WHEN due_date IS NULL THEN 'infinity'::timestamptz ELSE due_date END)"
DUE_DESC = "(CASE WHEN due_date IS NULL THEN '-infinity'::timestamptz ELSE due_date END)"
# name -> (key columns before, key columns after)
INDEXES = {
    "ix_tasks_user_created": ("user_id, created_at, id, priority, completed",
                              f"user_id, created_at, id, ({RANK}), completed"),
    "ix_tasks_user_completed_created": ("user_id, completed, created_at, id, priority",
                                        f"user_id, completed, created_at, id, ({RANK})"),
    "ix_tasks_user_updated": ("user_id, updated_at, id, priority, completed",
                              f"user_id, updated_at, id, ({RANK}), completed"),
    "ix_tasks_user_due": (f"user_id, {OLD_DUE_ASC}, id, priority, completed",
                          f"user_id, {DUE_ASC}, id, ({RANK}), completed"),
    "ix_tasks_user_due_desc": (f"user_id, {OLD_DUE_DESC}, id, priority, completed",
                               f"user_id, {DUE_DESC}, id, ({RANK}), completed"),
    "ix_tasks_user_priority": ("user_id, priority, id, completed",
                               f"user_id, ({RANK}), id, completed"),
    "ix_tasks_user_title": ("user_id, title, id, priority, completed",
                            f"user_id, title, id, ({RANK}), completed"),
}
READ = ("SELECT",)
READ_DELETE = ("SELECT", "DELETE")
READ_UPDATE = ("SELECT", "UPDATE")

# Each door: (function signature, door name, return type, body, {table: commands it opens}).
DOORS: tuple[tuple[str, str, str, str, dict[str, tuple[str, ...]]], ...] = (
    (
        "task_api_locate_task(p_task_id uuid, p_caller text)", "locate_task", "text",
        ("SELECT CASE WHEN t.user_id = p_caller THEN 'own' ELSE 'foreign' END INTO result "
        "FROM public.tasks AS t WHERE t.id = p_task_id;"),
        {"tasks": READ},
    ),
    (
        "task_api_locate_webhook(p_webhook_id uuid, p_caller text)", "locate_webhook", "text",
        ("SELECT CASE WHEN s.user_id = p_caller THEN 'own' ELSE 'foreign' END INTO result "
        "FROM public.webhook_subscriptions AS s WHERE s.id = p_webhook_id;"),
        {"webhook_subscriptions": READ},
    ),
    (
        # Fired reminders are in the change feed like tombstones, kept by the same rule.
        "task_api_purge_changes(p_older_than interval)", "purge_changes", "bigint",
        ("WITH tombstones AS (DELETE FROM public.task_tombstones "
        "WHERE deleted_at < now() - p_older_than RETURNING 1), "
        "reminders AS (DELETE FROM public.task_reminders "
        "WHERE fired_at < now() - p_older_than RETURNING 1) "
        "SELECT (SELECT count(*) FROM tombstones) + (SELECT count(*) FROM reminders) INTO result;"),
        {"task_tombstones": READ_DELETE, "task_reminders": READ_DELETE},
    ),
    (
        # Up to p_batch due reminders no other replica holds, stamped fired with this
        # transaction's id, and `reminder.due` recorded for the user's webhooks
        # (webhook_record_event, run here as the owner, hence the door on the webhook tables
        # too). No NOTIFY: it would serialise this commit with every other notifying one
        # (migration 0010); the scheduler wakes the users it got back once this has committed.
        "task_api_claim_reminders(p_batch integer)", "claim_reminders",
        ("TABLE (user_id text, task_id uuid, id uuid, remind_at timestamptz, "
        "fired_at timestamptz, webhooks integer)"),
        """RETURN QUERY
        WITH due AS (
            SELECT r.user_id, r.task_id, r.id FROM public.task_reminders AS r
            WHERE r.fired_at IS NULL AND r.remind_at <= now()
            ORDER BY r.remind_at LIMIT p_batch
            FOR UPDATE SKIP LOCKED
        ), fired AS (
            UPDATE public.task_reminders AS m
            SET fired_at = clock_timestamp(), change_xid = pg_current_xact_id()
            FROM due
            WHERE m.user_id = due.user_id AND m.task_id = due.task_id AND m.id = due.id
            RETURNING m.user_id, m.task_id, m.id, m.remind_at, m.fired_at
        )
        SELECT fired.user_id::text, fired.task_id, fired.id, fired.remind_at, fired.fired_at,
               public.webhook_record_event(fired.user_id, 'reminder.due', jsonb_build_object(
                   'id', fired.id, 'task_id', fired.task_id,
                   'remind_at', fired.remind_at, 'fired_at', fired.fired_at))
        FROM fired;""",
        {"task_reminders": READ_UPDATE, "webhook_subscriptions": READ,
         "webhook_deliveries": ("INSERT",)},
    ),
    (
        # Seconds until the next pending reminder (negative: one is due; NULL: none).
        "task_api_next_reminder_in()", "next_reminder", "float8",
        ("SELECT extract(epoch FROM min(r.remind_at) - clock_timestamp())::float8 INTO result "
        "FROM public.task_reminders AS r WHERE r.fired_at IS NULL;"),
        {"task_reminders": READ},
    ),
    (
        # The feed watch's poll (impl/tasks/feed_watch.py, frozen here): of the users p_users,
        # those with a task written, a tombstone or a reminder fired that the snapshot p_seen
        # did not see; and this statement's snapshot (the one its scans read with), which the
        # next poll passes back. The only statement of the body that reads, so the snapshot
        # it returns is the one it read with.
        "task_api_changed_users(p_users text[], p_seen text)", "changed_users",
        "TABLE (snapshot text, changed text[])",
        """RETURN QUERY
        WITH previous AS (SELECT p_seen::pg_snapshot AS seen)
        SELECT pg_current_snapshot()::text,
               ARRAY(
                   SELECT u.user_id FROM unnest(p_users) AS u(user_id)
                   WHERE EXISTS (SELECT 1 FROM public.tasks n WHERE n.user_id = u.user_id
                                 AND n.change_xid >= pg_snapshot_xmin(previous.seen)
                                 AND NOT pg_visible_in_snapshot(n.change_xid, previous.seen))
                      OR EXISTS (SELECT 1 FROM public.task_tombstones n
                                 WHERE n.user_id = u.user_id
                                 AND n.change_xid >= pg_snapshot_xmin(previous.seen)
                                 AND NOT pg_visible_in_snapshot(n.change_xid, previous.seen))
                      OR EXISTS (SELECT 1 FROM public.task_reminders n
                                 WHERE n.user_id = u.user_id
                                 AND n.change_xid >= pg_snapshot_xmin(previous.seen)
                                 AND NOT pg_visible_in_snapshot(n.change_xid, previous.seen))
               )::text[]
        FROM previous;""",
        {"tasks": READ, "task_tombstones": READ, "task_reminders": READ},
    ),
    (
        # After a write commits: whether the webhook workers need waking (one of the users
        # has an enabled subscription; impl/tasks/change_wake_ups.py). A yes or no, no more.
        "task_api_any_subscribed(p_users text[])", "any_subscribed", "boolean",
        ("SELECT EXISTS (SELECT 1 FROM public.webhook_subscriptions AS s "
        "WHERE s.user_id = ANY (p_users) AND s.enabled) INTO result;"),
        {"webhook_subscriptions": READ},
    ),
    (
        # Under one advisory lock (held to the end of the caller's transaction), so that each
        # claim counts every claim committed before it against the cap per endpoint.
        "task_api_claim_deliveries(p_how_many integer, p_cap integer, p_lease float8)",
        "claim_deliveries",
        ("TABLE (id uuid, attempts integer, body text, retry_since timestamptz, "
        "created_at timestamptz, url text, secret text, previous_secret text, "
        "subscription_id uuid)"),
        """PERFORM pg_advisory_xact_lock(hashtextextended('webhook delivery claims', 0));
        RETURN QUERY
        WITH candidates AS (
            SELECT d.id, d.subscription_id, d.next_attempt_at, d.created_at
            FROM public.webhook_deliveries AS d
            WHERE d.state = 'pending' AND d.next_attempt_at <= now()
            ORDER BY d.next_attempt_at LIMIT p_how_many * 4
        ), ranked AS (
            SELECT c.id, c.subscription_id, c.next_attempt_at, row_number() OVER (
                PARTITION BY c.subscription_id ORDER BY c.next_attempt_at, c.created_at) AS place
            FROM candidates AS c
            JOIN public.webhook_subscriptions AS s ON s.id = c.subscription_id AND s.enabled
        ), chosen AS (
            SELECT r.id FROM ranked AS r
            WHERE r.place + (SELECT count(*) FROM public.webhook_deliveries AS f
                             WHERE f.subscription_id = r.subscription_id
                               AND f.claimed_until > now()) <= p_cap
            ORDER BY r.next_attempt_at LIMIT p_how_many
        )
        UPDATE public.webhook_deliveries AS d
        SET claimed_until = now() + make_interval(secs => p_lease),
            next_attempt_at = now() + make_interval(secs => p_lease),
            attempts = d.attempts + 1, last_attempt_at = now()
        FROM chosen, public.webhook_subscriptions AS s
        WHERE d.id = chosen.id AND s.id = d.subscription_id
        RETURNING d.id, d.attempts, d.payload::text, d.retry_since, d.created_at, s.url::text,
            s.secret::text, (CASE WHEN s.previous_secret_expires_at > now()
                             THEN s.previous_secret END)::text, s.id;""",
        {"webhook_deliveries": READ_UPDATE, "webhook_subscriptions": READ},
    ),
    (
        # An attempt's result, fenced by its attempt number; a 410 disables the subscription.
        ("task_api_finish_delivery(p_id uuid, p_attempt integer, p_state text, "
        "p_retry_in float8, p_status_code integer, p_latency_ms float8, p_error text, "
        "p_excerpt text, p_disable_reason text)"),
        "finish_delivery", "bigint",
        """WITH finished AS (
            UPDATE public.webhook_deliveries SET
                state = p_state, claimed_until = NULL,
                next_attempt_at = now() + make_interval(secs => p_retry_in),
                delivered_at = CASE WHEN p_state = 'succeeded' THEN now() END,
                last_status_code = p_status_code, last_latency_ms = p_latency_ms,
                last_error = p_error, last_response_excerpt = p_excerpt
            WHERE id = p_id AND attempts = p_attempt
            RETURNING subscription_id
        ), disabled AS (
            UPDATE public.webhook_subscriptions AS s
            SET enabled = false, disabled_reason = p_disable_reason, updated_at = now()
            FROM finished WHERE s.id = finished.subscription_id AND p_disable_reason IS NOT NULL
            RETURNING s.id
        )
        SELECT count(*) INTO result FROM finished;""",
        {"webhook_deliveries": READ_UPDATE, "webhook_subscriptions": READ_UPDATE},
    ),
    (
        "task_api_purge_deliveries(p_older_than_seconds float8)", "purge_deliveries", "bigint",
        ("WITH gone AS (DELETE FROM public.webhook_deliveries "
        "WHERE state <> 'pending' AND coalesce(delivered_at, last_attempt_at, created_at) "
        "< now() - make_interval(secs => p_older_than_seconds) RETURNING 1) "
        "SELECT count(*) INTO result FROM gone;"),
        {"webhook_deliveries": READ_DELETE},
    ),
)


def _rebuild(which: int) -> None:
    for name, columns in INDEXES.items():
        op.execute(f"DROP INDEX {name}")
        op.execute(f"CREATE INDEX {name} ON tasks ({columns[which]})")


def upgrade() -> None:
    _rebuild(1)
    for table in USER_TABLES:
        row_security.protect(table)
    for signature, name, returns, body, tables in DOORS:
        for table, commands in tables.items():
            row_security.door(table, name, commands)
        row_security.door_function(signature, name, returns, body)


def downgrade() -> None:
    for signature, name, _returns, _body, tables in reversed(DOORS):
        function = signature.split("(", 1)[0]
        op.execute(f"DROP FUNCTION {function}")
        for table, commands in tables.items():
            row_security.close_door(table, name, commands)
    for table in reversed(USER_TABLES):
        row_security.unprotect(table)
    _rebuild(0)
