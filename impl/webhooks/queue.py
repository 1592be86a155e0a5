"""The delivery queue in PostgreSQL, across users: what the replicas' workers claim and record.

The one module whose statements are not scoped to one user: each goes through a door of
migration 0011 (row-level security lets the API's role through there, and only there).

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

# Each statement goes through a door of migration 0011 (a SECURITY DEFINER function that does
# that one job across users; the API's role sees only a caller's rows): the statements
# themselves are frozen there, as a migration is.
# $1 how many, $2 the cap per endpoint, $3 the lease in seconds. Due rows are scanned in the
# order they fell due (a partial index holds only pending ones); a subscription gets at most
# its cap minus what is already in flight to it. The door takes the claims' advisory lock
# first, held to the end of this statement's transaction.
CLAIM_SQL = "SELECT * FROM task_api_claim_deliveries($1, $2, $3)"
# $1 id, $2 attempt (the fence), $3 state, $4 seconds to the next attempt (null: none),
# $5 status code, $6 latency, $7 error, $8 excerpt, $9 why to disable the subscription (null:
# keep it). One statement, one round trip: it runs once per delivery attempt.
FINISH_SQL = "SELECT task_api_finish_delivery($1, $2, $3, $4, $5, $6, $7, $8, $9)"
# Finished deliveries older than $1 seconds.
PURGE_SQL = "SELECT task_api_purge_deliveries($1)"


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
    await connection.fetchval(PURGE_SQL, older_than_seconds)
