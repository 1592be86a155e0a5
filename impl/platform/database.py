"""The asyncpg connection pool, and the translation of pasted PostgreSQL URLs into asyncpg terms."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import orjson

from impl.platform.errors import DATABASE_DOWN, Unavailable
from impl.platform.metrics import Metrics
from impl.platform.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("task_api.db")

CONNECT_RETRY_FIRST_SECONDS = 0.5
CONNECT_RETRY_MAX_SECONDS = 30.0

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


class PoolConnection(asyncpg.Connection):  # type: ignore[misc]
    """asyncpg resets every connection it takes back into the pool (unlock advisory locks, close
    cursors, UNLISTEN, RESET ALL): one more round trip per request. This service uses none of
    those, and every operation ends its own transaction, so there is nothing to reset."""

    def get_reset_query(self) -> str:
        return ""


def _json_text(value: object) -> str:
    return orjson.dumps(value).decode()


async def set_codecs(connection: asyncpg.Connection) -> None:
    """jsonb to and from Python values (a task's reminders), with orjson: asyncpg's default
    passes jsonb as text both ways."""
    await connection.set_type_codec(
        "jsonb", encoder=_json_text, decoder=orjson.loads, schema="pg_catalog"
    )


class _PooledConnection:
    """`async with` one connection of the pool (a class, not @asynccontextmanager: this runs on
    every request, and a generator-based context manager costs several times more)."""

    __slots__ = ("connection", "database", "pool")

    def __init__(self, pool: asyncpg.Pool, database: Database) -> None:
        self.pool = pool
        self.database = database

    async def __aenter__(self) -> asyncpg.Connection:
        # With an idle connection in the pool, acquire() takes it without waiting: no timer
        # (asyncpg arms one for any timeout given). Otherwise the wait is bounded.
        if self.pool.get_idle_size():
            self.connection = await self.pool.acquire(timeout=None)
            return self.connection
        database = self.database
        timeout = database.settings.db_acquire_timeout_seconds
        metrics = database.metrics
        if metrics is None:
            self.connection = await self.pool.acquire(timeout=timeout)
            return self.connection
        # No idle connection: this one waits (or connects). Counted in memory: the gauge reads
        # `waiting` once a second, the histogram is published with the others.
        started = time.perf_counter()
        database.waiting += 1
        try:
            self.connection = await self.pool.acquire(timeout=timeout)
        finally:
            database.waiting -= 1
            metrics.pool_waits.observe(time.perf_counter() - started)
        return self.connection

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: object) -> None:
        if isinstance(error, asyncpg.exceptions.InternalClientError):
            # PostgreSQL ended this connection while it sat idle in the pool (shutdown,
            # failover): asyncpg only finds out on the next command, in a confused state.
            # Drop it, so the pool opens a fresh one, and answer 503, not 500.
            self.connection.terminate()
            await self.pool.release(self.connection)
            log.warning("dropped a connection the database had closed")
            raise Unavailable() from None
        await self.pool.release(self.connection)


class Database:
    """The pool, opened without waiting for PostgreSQL: while it is down, every operation fails
    fast (connect and acquire timeouts) and the API answers 503; a background task keeps trying
    with backoff, says why in the log, and warms the pool up once the database answers."""

    def __init__(self, url: str, settings: Settings, metrics: Metrics | None = None,
                 tracer: Tracer | None = None) -> None:
        self.options = connect_options(url, settings.db_statement_cache)
        self.settings = settings
        self.metrics = metrics
        self.tracer = tracer  # with tracing on: a span per statement of a traced request
        self.waiting = 0  # operations waiting for a pooled connection (with metrics on)
        self._pool: asyncpg.Pool | None = None
        self._connector: asyncio.Task[None] | None = None

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "dsn": self.options.dsn,
            "statement_cache_size": self.options.statement_cache_size,
            "timeout": self.settings.db_connect_timeout_seconds,
            "command_timeout": self.settings.db_command_timeout_seconds,
        }
        if self.options.statement_cache_size:
            # Cached statements keep their generic plan instead of being planned again for
            # each call's values: every statement here is written so that its generic plan is
            # the right one (impl/tasks/list_sql.py; tests/tasks/test_query_plans.py checks both), and
            # planning a list statement costs more than running it. Not behind a pooler, which
            # refuses unknown startup parameters (and plans every unnamed statement anyway).
            kwargs["server_settings"] = {"plan_cache_mode": "force_generic_plan"}
        return kwargs

    def _connection_class(self) -> type[PoolConnection]:
        if self.tracer is None:
            return PoolConnection
        from impl.platform.traced_connection import traced_connection_class

        return traced_connection_class(self.tracer)

    async def open(self) -> None:
        # min_size=0: creating the pool connects nothing, so it cannot fail while PostgreSQL
        # is down; connections are made on demand and replaced when they break.
        self._pool = await asyncpg.create_pool(
            min_size=0,
            connection_class=self._connection_class(),
            init=set_codecs,
            max_size=self.settings.db_pool_max_size,
            max_inactive_connection_lifetime=300,
            **self.connect_kwargs(),
        )
        try:
            await self.warm_up()
        except DATABASE_DOWN as exc:
            log.warning(
                "database not reachable at start-up (%s: %s); serving 503 and retrying",
                type(exc).__name__, exc,
            )
            self._connector = asyncio.create_task(self._connect_with_backoff())

    async def _connect_with_backoff(self) -> None:
        delay = CONNECT_RETRY_FIRST_SECONDS
        attempt = 1
        while True:
            await asyncio.sleep(delay)
            attempt += 1
            try:
                await self.warm_up()
            except DATABASE_DOWN as exc:
                delay = min(delay * 2, CONNECT_RETRY_MAX_SECONDS)
                log.warning(
                    "database still not reachable (attempt %d, %s: %s); next try in %.1f s",
                    attempt, type(exc).__name__, exc, delay,
                    extra={"attempt": attempt, "retry_in_seconds": delay},
                )
            else:
                log.info("database reachable after %d attempts", attempt)
                return

    async def warm_up(self) -> None:
        """Open min_size connections now rather than on the first requests."""
        pool = self.pool
        held = []
        try:
            for _ in range(max(self.settings.db_pool_min_size, 1)):
                connection = await pool.acquire(timeout=self.settings.db_connect_timeout_seconds)
                held.append(connection)
                await connection.fetchval("SELECT 1")
        finally:
            for connection in held:
                await pool.release(connection)

    async def close(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            self._connector = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise Unavailable()
        return self._pool

    def connection(self) -> _PooledConnection:
        """A pooled connection for one operation (`async with database.connection() as c`).
        Waiting for one is bounded, like connecting and every command, so no request hangs
        while the database is away.

        Behind PgBouncer in transaction mode no transaction is needed around a single
        statement: with its statement cache off, asyncpg sends an unnamed Parse without a Sync,
        so the pooler keeps Parse, Bind and Execute on one server connection (the PgBouncer
        pass of the test suite runs everything that way)."""
        return _PooledConnection(self.pool, self)

    def pool_sizes(self) -> tuple[int, int]:
        """(connections open, connections lent out) now; (0, 0) while the pool is closed."""
        pool = self._pool
        if pool is None:
            return 0, 0
        size = pool.get_size()
        return size, size - pool.get_idle_size()

    async def ping(self) -> None:
        async with self.connection() as connection:
            await connection.fetchval("SELECT 1", timeout=self.settings.db_connect_timeout_seconds)
