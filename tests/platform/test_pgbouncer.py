"""With TEST_THROUGH_PGBOUNCER=1 (scripts/test.sh's second pytest pass) the whole suite runs
with the API behind PgBouncer in transaction mode: these tests prove the traffic really goes
through it. In the direct pass they are skipped."""

from __future__ import annotations

import asyncpg
import httpx

from tests.support.factories import User
from tests.support.pgbouncer import PgBouncer
from tests.support.servers import POOLED, settings


def test_the_servers_are_configured_through_the_pooler(
    pgbouncer: PgBouncer, database_url: str
) -> None:
    configured = settings(database_url)
    assert configured.database_url == pgbouncer.url != database_url
    assert POOLED[database_url] == pgbouncer.url
    assert configured.db_statement_cache is False
    mode = {row["key"]: row["value"] for row in pgbouncer.admin("SHOW CONFIG")}["pool_mode"]
    assert mode == "transaction"


async def test_api_requests_are_transactions_in_pgbouncer(
    pgbouncer: PgBouncer, client: httpx.AsyncClient, alice: User
) -> None:
    before = pgbouncer.stats()
    for n in range(5):
        response = await client.post("/api/tasks", json={"title": f"t{n}"}, headers=alice.headers)
        assert response.status_code == 201, response.text
    listing = await client.get("/api/tasks", headers=alice.headers)
    assert listing.status_code == 200 and listing.json()["meta"]["total"] == 5
    after = pgbouncer.stats()
    transactions = int(after["total_xact_count"]) - int(before.get("total_xact_count", 0))
    queries = int(after["total_query_count"]) - int(before.get("total_query_count", 0))
    assert transactions >= 6 and queries >= 6, (before, after)
    # The API's pool holds client connections to PgBouncer, from loopback.
    clients = [
        row for row in pgbouncer.admin("SHOW CLIENTS") if row["database"] == pgbouncer.dbname
    ]
    assert clients and all(row["addr"] == "127.0.0.1" for row in clients), clients


async def test_sessions_behind_the_pooler_plan_generically(
    pgbouncer: PgBouncer, database_url: str
) -> None:
    """The pooler refuses the startup parameter a direct connection sends
    (impl/platform/database.py), so migration 0014 makes generic plans the database's default:
    a session through PgBouncer, asking for nothing, gets them. (database_url: the pooler pass
    keeps only the tests that name it.)"""
    assert pgbouncer.url != database_url
    connection = await asyncpg.connect(pgbouncer.url, statement_cache_size=0)
    try:
        assert await connection.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
    finally:
        await connection.close()
