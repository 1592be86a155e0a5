"""The webhook tables (migration 0010): subscriptions, and the outbox of deliveries.

`webhook_deliveries` is the outbox: a row per event and subscription, written by the database
in the transaction of the change itself (webhook_record_event, called by the tasks' trigger and
by whoever records other events), delivered by the replicas' workers after it commits.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

from impl.platform import user_ids

EVENT_TYPES = ("task.created", "task.updated", "task.completed", "task.deleted", "reminder.due")
# pending: waiting for its next attempt (or in flight: claimed_until in the future);
# succeeded: a 2xx came back; failed: given up (retry window over, or the endpoint said 410).
STATES = ("pending", "succeeded", "failed")


def _user_id() -> sa.Column[str]:
    # As the tasks' user_id: text in the "C" collation, compared byte for byte.
    return sa.Column("user_id", sa.Text(collation="C"), nullable=False)


def _timestamp(nullable: bool = True, now: bool = False) -> sa.Column[datetime]:
    return sa.Column(
        sa.DateTime(timezone=True), nullable=nullable,
        server_default=sa.func.now() if now else None,
    )


class WebhookSubscription(SQLModel, table=True):
    __tablename__ = "webhook_subscriptions"
    __table_args__ = (
        sa.CheckConstraint(user_ids.SQL_CHECK, name="user_id_valid"),
        sa.CheckConstraint("char_length(url) BETWEEN 1 AND 2048", name="url_length"),
        sa.CheckConstraint("cardinality(event_types) BETWEEN 1 AND 5", name="event_type_count"),
        # The outbox's lookup on every task write: this user's enabled subscriptions.
        sa.Index("ix_webhook_subscriptions_user", "user_id", "created_at", "id"),
    )

    id: uuid.UUID = Field(primary_key=True)
    user_id: str = Field(sa_column=_user_id())
    url: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    event_types: list[str] = Field(
        sa_column=sa.Column(postgresql.ARRAY(sa.String(32)), nullable=False)
    )
    description: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    enabled: bool = Field(
        default=True, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.true())
    )
    # Why the server disabled it (a 410 from the endpoint); null when the user did, or enabled.
    disabled_reason: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    # `whsec_` + base64 of 24 random bytes; the previous one signs too until it expires.
    secret: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    previous_secret: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    previous_secret_expires_at: datetime | None = Field(default=None, sa_column=_timestamp())
    created_at: datetime = Field(sa_column=_timestamp(nullable=False, now=True))
    updated_at: datetime = Field(sa_column=_timestamp(nullable=False, now=True))


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.CheckConstraint(user_ids.SQL_CHECK, name="user_id_valid"),
        sa.CheckConstraint("state IN ('pending', 'succeeded', 'failed')", name="state_known"),
        # What the workers claim: pending deliveries by when they are due.
        sa.Index("ix_webhook_deliveries_due", "next_attempt_at",
                 postgresql_where=sa.text("state = 'pending'")),
        # A subscription's recent deliveries (the listing), newest first.
        sa.Index("ix_webhook_deliveries_subscription", "subscription_id", "created_at", "id"),
        # Attempts in flight per endpoint (the cap): only claimed rows are in it.
        sa.Index("ix_webhook_deliveries_in_flight", "subscription_id",
                 postgresql_where=sa.text("claimed_until IS NOT NULL")),
    )

    # Also the `webhook-id` header: the same on every attempt of this event to this endpoint.
    id: uuid.UUID = Field(primary_key=True)
    subscription_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    user_id: str = Field(sa_column=_user_id())
    event_type: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    # The body sent, as Standard Webhooks suggests: {type, timestamp, data}.
    payload: dict[str, object] = Field(sa_column=sa.Column(postgresql.JSONB, nullable=False))
    created_at: datetime = Field(sa_column=_timestamp(nullable=False, now=True))
    state: str = Field(
        default="pending",
        sa_column=sa.Column(sa.String(16), nullable=False, server_default="pending"),
    )
    attempts: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    next_attempt_at: datetime | None = Field(default=None, sa_column=_timestamp(now=True))
    # Set while a worker holds the attempt (its lease); a killed worker's lease runs out and
    # another replica takes the delivery up again.
    claimed_until: datetime | None = Field(default=None, sa_column=_timestamp())
    # Retries stop WEBHOOK_RETRY_FOR_SECONDS after this (the event's recording, or a redelivery).
    retry_since: datetime = Field(sa_column=_timestamp(nullable=False, now=True))
    last_attempt_at: datetime | None = Field(default=None, sa_column=_timestamp())
    last_status_code: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    last_latency_ms: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    # The first 256 characters of the endpoint's answer, no more.
    last_response_excerpt: str | None = Field(default=None, sa_column=sa.Column(sa.String(256)))
    delivered_at: datetime | None = Field(default=None, sa_column=_timestamp())
