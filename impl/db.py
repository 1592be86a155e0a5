"""The asyncpg connection pool, and the translation of pasted PostgreSQL URLs into asyncpg terms."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from impl.errors import ServiceUnavailable
from impl.settings import Settings

log = logging.getLogger("task_api.db")

# Query parameters of libpq URLs that asyncpg does not take. asyncpg would send unknown ones to
# the server as settings, which PostgreSQL refuses.
_DROPPED_PARAMS = {"channel_binding"}


@dataclass(frozen=True)
class ConnectOptions:
    dsn: str
    statement_cache_size: int


def connect_options(url: str, statement_cache: bool | None = None) -> ConnectOptions:
    """A URL as pasted from the Neon console (or any libpq URL) -> what asyncpg.connect takes.

    `sslmode` stays in the DSN (asyncpg understands it: `require` means TLS on);
    `channel_binding` is dropped (asyncpg cannot do it, TLS still protects the session);
    SQLAlchemy-style schemes (`postgresql+asyncpg://`) are normalized. Neon's pooled endpoint
    (`-pooler` in the host) is PgBouncer in transaction mode: no statement cache there.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {scheme}://")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    dropped = [k for k, _ in query if k in _DROPPED_PARAMS]
    if dropped:
        log.info("DATABASE_URL: ignoring %s (not supported by asyncpg; TLS stays on)", dropped)
    query = [(k, v) for k, v in query if k not in _DROPPED_PARAMS]
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), parts.fragment))
    if statement_cache is None:
        statement_cache = "-pooler" not in (parts.hostname or "")
    return ConnectOptions(dsn=dsn, statement_cache_size=100 if statement_cache else 0)


class Database:
    def __init__(self, url: str, settings: Settings) -> None:
        self.options = connect_options(url, settings.db_statement_cache)
        self.settings = settings
        self._pool: asyncpg.Pool | None = None

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "dsn": self.options.dsn,
            "statement_cache_size": self.options.statement_cache_size,
            "timeout": self.settings.db_connect_timeout_seconds,
            "command_timeout": self.settings.db_command_timeout_seconds,
        }

    async def open(self) -> None:
        # min_size=0: the pool opens even while PostgreSQL is down; connections are made on
        # demand, so the server answers 503 until the database is back, then recovers alone.
        self._pool = await asyncpg.create_pool(
            min_size=0,
            max_size=self.settings.db_pool_max_size,
            max_inactive_connection_lifetime=300,
            **self.connect_kwargs(),
        )
        await self.warm_up()

    async def warm_up(self) -> None:
        """Open a few connections now rather than on the first requests; harmless if it fails."""
        pool = self.pool
        held = []
        try:
            for _ in range(self.settings.db_pool_min_size):
                held.append(await pool.acquire(timeout=self.settings.db_connect_timeout_seconds))
        except Exception as exc:  # noqa: BLE001 - the server still starts, and answers 503
            log.warning("database not reachable at start-up: %s: %s", type(exc).__name__, exc)
        finally:
            for connection in held:
                await pool.release(connection)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise ServiceUnavailable()
        return self._pool

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1", timeout=self.settings.db_connect_timeout_seconds)
