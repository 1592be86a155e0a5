"""User-scoped SQL for webhook subscriptions and their deliveries, on asyncpg.

Every function takes the caller's `user_id` as a required keyword argument and filters on it, as
the tasks' store does, and names it as the statement's caller for row-level security (as_caller,
impl/platform/row_scope.py; migration 0011). What the delivery workers do across users is in
queue.py, through doors.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson

from impl.platform.database import Database
from impl.platform.row_scope import CALLER_SETTING, as_caller
from impl.webhooks.errors import (
    DeliveryInFlight,
    DeliveryNotFound,
    ForeignWebhook,
    OverWebhookQuota,
    WebhookNotFound,
)
from impl.webhooks.signing import new_secret

# A subscription as the API returns it (never its secrets).
SUBSCRIPTION = """id, url, event_types, description, enabled, disabled_reason,
    CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END
        AS rotation_ends_at,
    created_at, updated_at"""
DELIVERY = """id, event_type, state, attempts, created_at, last_attempt_at, last_status_code,
    last_latency_ms, last_error, last_response_excerpt, next_attempt_at, delivered_at, payload"""
# The insert under the per-user quota: run after the user's advisory lock (create), so two
# concurrent creates of one user count one after the other and never pass the quota.
CREATE_SQL = f"""
    INSERT INTO webhook_subscriptions (id, user_id, url, event_types, description, enabled, secret)
    SELECT $1, $2, $3, $4, $5, $6, $7
    WHERE (SELECT count(*) FROM webhook_subscriptions WHERE user_id = $2) < $8
    RETURNING {SUBSCRIPTION}, secret"""
# The user's lock, and the caller for the rest of the transaction (one round trip).
USER_LOCK_SQL = ("SELECT pg_advisory_xact_lock(hashtextextended('webhooks:' || $1, 0)), "
                 f"set_config('{CALLER_SETTING}', $1, true)")
# Only on a failure path: 'own', 'foreign' or NULL, through migration 0011's door (another
# user's subscription is out of the API's sight).
LOCATE_SQL = "SELECT task_api_locate_webhook($1, $2)"
PATCHABLE = ("url", "event_types", "description", "enabled")


def _subscription(record: asyncpg.Record) -> dict[str, Any]:
    return dict(record)


def _delivery(record: asyncpg.Record) -> dict[str, Any]:
    delivery = dict(record)
    # jsonb arrives decoded (impl/platform/database.py set_codecs); as text on a bare connection
    if isinstance(delivery["payload"], str):
        delivery["payload"] = orjson.loads(delivery["payload"])
    return delivery


class WebhookStore:
    def __init__(self, database: Database, max_per_user: int, secret_grace_seconds: int) -> None:
        self.database = database
        self.max_per_user = max_per_user
        self.secret_grace_seconds = secret_grace_seconds

    async def all(self, *, user_id: str) -> list[dict[str, Any]]:
        async with self.database.connection() as connection:
            records = await connection.fetch(
                f"SELECT {SUBSCRIPTION} FROM webhook_subscriptions "
                f"WHERE user_id = $1 AND {as_caller('$1')} ORDER BY created_at, id", user_id)
        return [_subscription(record) for record in records]

    async def create(
        self, *, user_id: str, url: str, event_types: list[str], description: str | None,
        enabled: bool,
    ) -> dict[str, Any]:
        async with self.database.connection() as connection, connection.transaction():
            await connection.execute(USER_LOCK_SQL, user_id)
            record = await connection.fetchrow(
                CREATE_SQL, uuid.uuid4(), user_id, url, event_types, description, enabled,
                new_secret(), self.max_per_user)
        if record is None:
            raise OverWebhookQuota(self.max_per_user)
        return _subscription(record)

    async def get(self, *, user_id: str, webhook_id: uuid.UUID) -> dict[str, Any]:
        async with self.database.connection() as connection:
            record = await connection.fetchrow(
                f"SELECT {SUBSCRIPTION} FROM webhook_subscriptions "
                f"WHERE id = $1 AND user_id = $2 AND {as_caller('$2')}",
                webhook_id, user_id)
            if record is None:
                await self._diagnose(connection, user_id, webhook_id)
        return _subscription(record)

    async def update(
        self, *, user_id: str, webhook_id: uuid.UUID, changes: dict[str, Any]
    ) -> dict[str, Any]:
        names = [name for name in PATCHABLE if name in changes]
        assignments = [f"{name} = ${index}" for index, name in enumerate(names, 3)]
        if "enabled" in changes:  # whoever sets it decides: the server's reason no longer holds
            assignments.append("disabled_reason = NULL")
        assignments.append("updated_at = now()")
        async with self.database.connection() as connection:
            record = await connection.fetchrow(
                f"UPDATE webhook_subscriptions SET {', '.join(assignments)} "
                f"WHERE id = $1 AND user_id = $2 AND {as_caller('$2')} RETURNING {SUBSCRIPTION}",
                webhook_id, user_id, *(changes[name] for name in names))
            if record is None:
                await self._diagnose(connection, user_id, webhook_id)
        return _subscription(record)

    async def delete(self, *, user_id: str, webhook_id: uuid.UUID) -> None:
        async with self.database.connection() as connection:
            deleted = await connection.fetchval(
                "DELETE FROM webhook_subscriptions "
                f"WHERE id = $1 AND user_id = $2 AND {as_caller('$2')} RETURNING id",
                webhook_id, user_id)
            if deleted is None:
                await self._diagnose(connection, user_id, webhook_id)

    async def rotate_secret(self, *, user_id: str, webhook_id: uuid.UUID) -> dict[str, Any]:
        """A new secret; the current one keeps signing for the grace period (none: at once
        replaced). A second rotation within the grace drops the oldest."""
        async with self.database.connection() as connection:
            record = await connection.fetchrow(
                "UPDATE webhook_subscriptions SET previous_secret = secret, secret = $3, "
                "previous_secret_expires_at = now() + make_interval(secs => $4), "
                "updated_at = now() "
                f"WHERE id = $1 AND user_id = $2 AND {as_caller('$2')} RETURNING {SUBSCRIPTION}, secret",
                webhook_id, user_id, new_secret(), float(self.secret_grace_seconds))
            if record is None:
                await self._diagnose(connection, user_id, webhook_id)
        return _subscription(record)

    async def deliveries(
        self, *, user_id: str, webhook_id: uuid.UUID, limit: int
    ) -> list[dict[str, Any]]:
        async with self.database.connection() as connection:
            records = await connection.fetch(
                f"SELECT {DELIVERY} FROM webhook_deliveries "
                f"WHERE subscription_id = $1 AND user_id = $2 AND {as_caller('$2')} "
                "ORDER BY created_at DESC, id DESC LIMIT $3", webhook_id, user_id, limit)
            if not records:
                await self.get(user_id=user_id, webhook_id=webhook_id)  # 404/403, or none yet
        return [_delivery(record) for record in records]

    async def redeliver(
        self, *, user_id: str, webhook_id: uuid.UUID, delivery_id: uuid.UUID
    ) -> dict[str, Any]:
        """Due again now, with a fresh retry window; refused while an attempt is in flight."""
        async with self.database.connection() as connection:
            record = await connection.fetchrow(
                "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now(), "
                "retry_since = now(), claimed_until = NULL, delivered_at = NULL "
                "WHERE id = $1 AND subscription_id = $2 AND user_id = $3 "
                f"AND {as_caller('$3')} AND (claimed_until IS NULL OR claimed_until < now()) "
                f"RETURNING {DELIVERY}", delivery_id, webhook_id, user_id)
            if record is None:
                await self.get(user_id=user_id, webhook_id=webhook_id)  # 404/403 of the parent
                found = await connection.fetchval(
                    "SELECT 1 FROM webhook_deliveries WHERE id = $1 AND subscription_id = $2 "
                    f"AND user_id = $3 AND {as_caller('$3')}", delivery_id, webhook_id, user_id)
                raise DeliveryInFlight() if found else DeliveryNotFound()
            await connection.execute("SELECT pg_notify('webhook_deliveries', '')")
        return _delivery(record)

    async def _diagnose(
        self, connection: asyncpg.Connection, user_id: str, webhook_id: uuid.UUID
    ) -> None:
        whose = await connection.fetchval(LOCATE_SQL, webhook_id, user_id)
        if whose is None:
            raise WebhookNotFound()
        raise ForeignWebhook()
