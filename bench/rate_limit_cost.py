"""What a rate-limit decision costs: in process (impl/http/rate_limit.py, what the API uses) against a
token bucket shared through PostgreSQL (one upsert per request, what N replicas would need to
share one limit). Prints figures; asserts nothing.

    .venv/bin/python bench/rate_limit_cost.py [--requests 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from impl.http.rate_limit import RateLimiter

# A token bucket in one statement: refill by elapsed time, take one if there is one.
SHARED_TAKE = """
INSERT INTO rate_buckets AS b (key, tokens, at) VALUES ($1, $2 - 1, clock_timestamp())
ON CONFLICT (key) DO UPDATE SET
    tokens = least($2, b.tokens + extract(epoch FROM clock_timestamp() - b.at) * $3)
             - CASE WHEN least($2, b.tokens + extract(epoch FROM clock_timestamp() - b.at) * $3)
                         >= 1 THEN 1 ELSE 0 END,
    at = clock_timestamp()
RETURNING tokens
"""


async def measure(requests: int) -> None:
    from impl.platform.embedded import pgserver_module

    pgserver = pgserver_module()

    limiter = RateLimiter("per-user", 1e9, 10**9)
    keys = [f"user-{n % 100}" for n in range(requests)]
    started = time.perf_counter()
    for key in keys:
        limiter.take(key)
    in_process_us = (time.perf_counter() - started) / requests * 1e6

    with tempfile.TemporaryDirectory() as tmp:
        server = pgserver.get_server(
            Path(tmp) / "pg", cleanup_mode="delete"
        )
        connection = await asyncpg.connect(server.get_uri())
        await connection.execute(
            "CREATE TABLE rate_buckets (key text COLLATE \"C\" PRIMARY KEY, "
            "tokens double precision NOT NULL, at timestamptz NOT NULL)"
        )
        samples = []
        for key in keys:
            begun = time.perf_counter()
            await connection.fetchval(SHARED_TAKE, key, 1e9, 1e9)
            samples.append((time.perf_counter() - begun) * 1e6)
        await connection.close()
        server.cleanup()
    samples.sort()
    print(f"{requests} decisions, 100 users")
    print(f"  in process (impl/http/rate_limit.py): {in_process_us:8.1f} us per request")
    print(f"  shared through PostgreSQL:       {statistics.median(samples):8.1f} us per request "
          f"(median; p99 {samples[int(len(samples) * 0.99)]:.1f} us), one more round trip and "
          "a row write per request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    asyncio.run(measure(parser.parse_args().requests))


if __name__ == "__main__":
    main()
