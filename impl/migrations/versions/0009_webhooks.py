"""webhooks: subscriptions, and an outbox of deliveries written in the change's own transaction

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

Issue 29: a user's own backend hears every change (Standard Webhooks, impl/webhooks/). A change
must be delivered if and only if it committed, so the event is recorded by the database in the
transaction of the change: `webhook_record_event(user_id, type, data)` inserts one delivery per
enabled subscription of that user that wants the type, and NOTIFYs `webhook_deliveries` (sent at
commit, never for a rollback) so the replicas' workers wake at once. The tasks' AFTER trigger
calls it only when the user has an enabled subscription (an index probe on
ix_webhook_subscriptions_user), so a write of a user without webhooks builds no payload.
Other events (reminders) call the same function in their own transaction.

New tables only: nothing existing is rewritten or locked beyond adding the trigger.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Frozen here (a migration is a snapshot): impl/platform/user_ids.py says the same.
USER_ID_CHECK = r"char_length(user_id) BETWEEN 1 AND 255 AND user_id !~ '[\x01-\x1f\x7f-\x9f]'"


def _timestamp(name: str, nullable: bool = True, now: bool = False) -> sa.Column[object]:
    default = sa.text("now()") if now else None
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Text(collation="C"), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("disabled_reason", sa.String(length=255), nullable=True),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.Column("previous_secret", sa.String(length=64), nullable=True),
        _timestamp("previous_secret_expires_at"),
        _timestamp("created_at", nullable=False, now=True),
        _timestamp("updated_at", nullable=False, now=True),
        sa.CheckConstraint(USER_ID_CHECK, name="user_id_valid"),
        sa.CheckConstraint("cardinality(event_types) BETWEEN 1 AND 5", name="event_type_count"),
        sa.CheckConstraint("char_length(url) BETWEEN 1 AND 2048", name="url_length"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_subscriptions_user", "webhook_subscriptions",
                    ["user_id", "created_at", "id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Text(collation="C"), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        _timestamp("created_at", nullable=False, now=True),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _timestamp("next_attempt_at", now=True),
        _timestamp("claimed_until"),
        _timestamp("retry_since", nullable=False, now=True),
        _timestamp("last_attempt_at"),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_latency_ms", sa.Float(), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("last_response_excerpt", sa.String(length=256), nullable=True),
        _timestamp("delivered_at"),
        sa.CheckConstraint(USER_ID_CHECK, name="user_id_valid"),
        sa.CheckConstraint("state IN ('pending', 'succeeded', 'failed')", name="state_known"),
        sa.ForeignKeyConstraint(["subscription_id"], ["webhook_subscriptions.id"],
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["next_attempt_at"],
                    postgresql_where=sa.text("state = 'pending'"))
    op.create_index("ix_webhook_deliveries_in_flight", "webhook_deliveries", ["subscription_id"],
                    postgresql_where=sa.text("claimed_until IS NOT NULL"))
    op.create_index("ix_webhook_deliveries_subscription", "webhook_deliveries",
                    ["subscription_id", "created_at", "id"])
    # The one way an event enters the outbox (impl/webhooks/outbox.py calls it too).
    op.execute(
        """
        CREATE FUNCTION webhook_record_event(p_user_id text, p_type text, p_data jsonb)
        RETURNS integer LANGUAGE plpgsql AS $$
        DECLARE
            recorded integer;
        BEGIN
            INSERT INTO webhook_deliveries (id, subscription_id, user_id, event_type, payload)
            SELECT gen_random_uuid(), s.id, p_user_id, p_type,
                   jsonb_build_object('type', p_type, 'timestamp', now(), 'data', p_data)
            FROM webhook_subscriptions AS s
            WHERE s.user_id = p_user_id AND s.enabled AND p_type = ANY (s.event_types);
            GET DIAGNOSTICS recorded = ROW_COUNT;
            IF recorded > 0 THEN
                PERFORM pg_notify('webhook_deliveries', '');
            END IF;
            RETURN recorded;
        END $$
        """
    )
    # A task's data is the task as the API returns it: every column but the internal ones.
    op.execute(
        """
        CREATE FUNCTION task_webhook_event() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            owner text := CASE WHEN TG_OP = 'DELETE' THEN OLD.user_id ELSE NEW.user_id END;
        BEGIN
            IF NOT EXISTS (SELECT FROM webhook_subscriptions
                           WHERE user_id = owner AND enabled) THEN
                RETURN NULL;
            END IF;
            IF TG_OP = 'DELETE' THEN
                PERFORM webhook_record_event(owner, 'task.deleted',
                    jsonb_build_object('id', OLD.id, 'deleted_at', now()));
            ELSIF TG_OP = 'INSERT' THEN
                PERFORM webhook_record_event(owner, 'task.created',
                    to_jsonb(NEW) - 'search' - 'change_xid' - 'wall_time');
            ELSE
                PERFORM webhook_record_event(owner,
                    CASE WHEN NEW.completed AND NOT OLD.completed
                         THEN 'task.completed' ELSE 'task.updated' END,
                    to_jsonb(NEW) - 'search' - 'change_xid' - 'wall_time');
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute("CREATE TRIGGER tasks_webhook_event AFTER INSERT OR UPDATE OR DELETE ON tasks "
               "FOR EACH ROW EXECUTE FUNCTION task_webhook_event()")


def downgrade() -> None:
    op.execute("DROP TRIGGER tasks_webhook_event ON tasks")
    op.execute("DROP FUNCTION task_webhook_event()")
    op.execute("DROP FUNCTION webhook_record_event(text, text, jsonb)")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_subscriptions")
