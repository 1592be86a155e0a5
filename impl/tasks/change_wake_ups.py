"""The wake-ups of a task change, sent after it has committed (impl/platform/wake_ups.py): the
streams of each changed user, on every replica (NOTIFY task_changes, the user id), and the
webhook workers when one of those users has an enabled subscription (NOTIFY
webhook_deliveries: its delivery was recorded in the change's transaction, migration 0009).
Neither is sent by the writing transaction any more (migration 0010): PostgreSQL would make
every notifying transaction commit one at a time. A lost one is made good by a poll: the
streams' (impl/tasks/feed_watch.py, about a second), the workers' (every second)."""

from __future__ import annotations

# $1: the changed users (text[]). One statement, whatever their number; the subscription check
# is one probe per user of ix_webhook_subscriptions_user, through a door of migration 0011 (the
# users are several, and the API's role sees only a caller's rows): it answers yes or no.
WAKE_SQL = """
SELECT (SELECT count(pg_notify('task_changes', changed.user_id))
        FROM unnest($1::text[]) AS changed(user_id)) AS streams,
       (SELECT count(pg_notify('webhook_deliveries', ''))
        FROM (SELECT WHERE task_api_any_subscribed($1::text[])) AS subscribed) AS workers
"""
