"""The delivery queue in PostgreSQL, across users: what the replicas' workers claim and record.

The one module whose statements are not scoped to one user (row-level security must let the
workers' role through here, and only here).

Claiming: FOR UPDATE SKIP LOCKED alone would let each replica skip the rows another one is
claiming, but could not keep a cap on the attempts in flight to one endpoint across replicas
(each would count the others' claims before they commit). So a claim is one short transaction
under one advisory lock: claims queue for a millisecond, and each counts every claim committed
before it. A claimed row gets a lease (`claimed_until`, also its `next_attempt_at`) and its
attempt number: if the replica dies, the lease runs out and any replica claims it again with the
next number, and a late result of an attempt whose lease was taken over is ignored (it names
an attempt number that is no longer the row's). No second broker: past what one PostgreSQL
primary writes (thousands of deliveries a second) a dedicated queue would take over.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

CLAIM_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('webhook delivery claims', 0))"
# $1 how many, $2 the cap per endpoint, $3 the lease in seconds. Due rows are scanned in the
# order they fell due (a partial index holds only pending ones); a subscription gets at most
# its cap minus what is already in flight to it.
CLAIM_SQL = """
WITH candidates AS (
    SELECT id, subscription_id, next_attempt_at, created_at FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at LIMIT $1 * 4
), ranked AS (
    SELECT c.id, c.subscription_id, c.next_attempt_at, row_number() OVER (
        PARTITION BY c.subscription_id ORDER BY c.next_attempt_at, c.created_at) AS place
    FROM candidates AS c
    JOIN webhook_subscriptions AS s ON s.id = c.subscription_id AND s.enabled
), chosen AS (
    SELECT r.id FROM ranked AS r
    WHERE r.place + (SELECT count(*) FROM webhook_deliveries AS f
                     WHERE f.subscription_id = r.subscription_id
                       AND f.claimed_until > now()) <= $2
    ORDER BY r.next_attempt_at LIMIT $1
)
UPDATE webhook_deliveries AS d
SET claimed_until = now() + make_interval(secs => $3),
    next_attempt_at = now() + make_interval(secs => $3),
    attempts = d.attempts + 1, last_attempt_at = now()
FROM chosen, webhook_subscriptions AS s
WHERE d.id = chosen.id AND s.id = d.subscription_id
RETURNING d.id, d.attempts, d.payload::text AS body, d.retry_since, d.created_at, s.url,
    s.secret, CASE WHEN s.previous_secret_expires_at > now() THEN s.previous_secret END
        AS previous_secret, s.id AS subscription_id
"""
# $1 id, $2 attempt (the fence), $3 state, $4 seconds to the next attempt (null: none),
# $5 status code, $6 latency, $7 error, $8 excerpt, $9 why to disable the subscription (null:
# keep it). One statement, one round trip: it runs once per delivery attempt.
FINISH_SQL = """
WITH finished AS (
    UPDATE webhook_deliveries SET
        state = $3::text, claimed_until = NULL,
        next_attempt_at = now() + make_interval(secs => $4::float8),
        delivered_at = CASE WHEN $3::text = 'succeeded' THEN now() END,
        last_status_code = $5::int, last_latency_ms = $6::float8, last_error = $7::text,
        last_response_excerpt = $8::text
    WHERE id = $1 AND attempts = $2
    RETURNING subscription_id
), disabled AS (
    UPDATE webhook_subscriptions AS s
    SET enabled = false, disabled_reason = $9::text, updated_at = now()
    FROM finished WHERE s.id = finished.subscription_id AND $9::text IS NOT NULL
    RETURNING s.id
)
SELECT count(*) FROM finished
"""
PURGE_SQL = """
DELETE FROM webhook_deliveries
WHERE state <> 'pending' AND coalesce(delivered_at, last_attempt_at, created_at)
    < now() - make_interval(secs => $1)
"""


@dataclass(frozen=True, slots=True)
class Claim:
    id: uuid.UUID
    attempt: int
    body: bytes
    retry_since: datetime
    created_at: datetime
    url: str
    secrets: list[str]  # the current one first; the previous one during a rotation
    subscription_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Result:
    state: str  # pending (a retry is due), succeeded or failed
    retry_in_seconds: float | None
    status_code: int | None
    latency_ms: float | None
    error: str | None
    excerpt: str | None
    disable_reason: str | None = None  # the endpoint answered 410: disable its subscription


async def claim(
    connection: asyncpg.Connection, how_many: int, cap_per_endpoint: int, lease_seconds: float
) -> list[Claim]:
    async with connection.transaction():
        await connection.execute(CLAIM_LOCK_SQL)
        records = await connection.fetch(CLAIM_SQL, how_many, cap_per_endpoint, lease_seconds)
    return [
        Claim(
            id=record["id"], attempt=record["attempts"], body=record["body"].encode(),
            retry_since=record["retry_since"], created_at=record["created_at"],
            url=record["url"],
            secrets=[s for s in (record["secret"], record["previous_secret"]) if s],
            subscription_id=record["subscription_id"],
        )
        for record in records
    ]


async def finish(connection: asyncpg.Connection, claimed: Claim, result: Result) -> bool:
    """Records an attempt's result; False when its lease was taken over meanwhile."""
    recorded = await connection.fetchval(
        FINISH_SQL, claimed.id, claimed.attempt, result.state, result.retry_in_seconds,
        result.status_code, result.latency_ms, result.error, result.excerpt,
        result.disable_reason,
    )
    return bool(recorded)


async def purge(connection: asyncpg.Connection, older_than_seconds: float) -> None:
    await connection.execute(PURGE_SQL, older_than_seconds)
