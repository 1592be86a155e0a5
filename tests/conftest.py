"""Fixtures: one real PostgreSQL and one real HTTP server per test session; users are fresh
random ids per test, so tests never see each other's tasks. Fixtures only: what tests import
lives in tests/support/ (factories.py: users and tokens)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from impl.platform.database import connect_options
from impl.platform.embedded import api_role_url
from impl.platform.migrate import upgrade
from scripts import node_tools
from tests.support.factories import THROUGH_PGBOUNCER, User, new_user
from tests.support.pgbouncer import PgBouncer, running_pgbouncer
from tests.support.servers import (
    POOLED,
    StoppablePostgres,
    direct_connection,
    running_server,
    settings,
)


def pytest_configure(config: pytest.Config) -> None:
    """Every Node tool a test starts (node_modules/.bin's `#!/usr/bin/env node` included) runs on
    the project's pinned Node, never the machine's (scripts/node_tools.py)."""
    node_tools.use_in_this_process()


# scripts/test.sh runs the two passes at once (TEST_STAGE=shared: without the tests marked
# `alone`), then the `alone` ones by themselves (TEST_STAGE=alone). Unset: everything.
STAGE = os.environ.get("TEST_STAGE", "")


def _kept(item: pytest.Item) -> bool:
    if STAGE and (item.get_closest_marker("alone") is not None) != (STAGE == "alone"):
        return False
    # The PgBouncer pass runs what uses the session database; the rest (the contract's static
    # checks, the docs browser, tsc, tests with their own PostgreSQL) ran in the direct pass.
    return not THROUGH_PGBOUNCER or "database_url" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        (kept if _kept(item) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        upgrade(url)
        yield url
        return
    from impl.platform.embedded import pgserver_module

    pgserver = pgserver_module()

    with tempfile.TemporaryDirectory(prefix="task-api-test-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        url = server.get_uri()
        upgrade(url)
        try:
            yield url
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
def pgbouncer(request: pytest.FixtureRequest) -> Iterator[PgBouncer]:
    """The PgBouncer in front of the session database (only with TEST_THROUGH_PGBOUNCER=1)."""
    if not THROUGH_PGBOUNCER:
        pytest.skip("direct run: TEST_THROUGH_PGBOUNCER=1 runs the suite through PgBouncer")
    database_url: str = request.getfixturevalue("database_url")
    with running_pgbouncer(api_role_url(database_url)) as bouncer:  # as the API's role
        POOLED[database_url] = bouncer.url
        try:
            yield bouncer
        finally:
            POOLED.pop(database_url, None)


@pytest.fixture(scope="session", autouse=True)
def _through_pgbouncer(request: pytest.FixtureRequest) -> None:
    """Before any server is built: route tests.support.servers.settings(database_url) via PgBouncer."""
    if THROUGH_PGBOUNCER:
        request.getfixturevalue("pgbouncer")


@pytest.fixture
def stoppable_postgres() -> Iterator[StoppablePostgres]:
    """A private, migrated PostgreSQL on a loopback port, for tests that stop and start it.
    Not under tmp_path: every pytest run makes /tmp/pytest-of-<user> private again, and
    PostgreSQL runs as another user when the tests run as root."""
    with tempfile.TemporaryDirectory(prefix="task-api-pg-") as tmp:
        postgres = StoppablePostgres(Path(tmp))
        try:
            upgrade(postgres.url)
            yield postgres
        finally:
            postgres.close()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """An empty database of its own on the test PostgreSQL, dropped afterwards."""
    name = f"migration_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(connect_options(database_url).dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(database_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
def base_url(database_url: str) -> Iterator[str]:
    with running_server(settings(database_url)) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection, to check what the API really wrote."""
    async with direct_connection(database_url) as connection:
        yield connection


@pytest.fixture
def alice() -> User:
    return new_user()


@pytest.fixture
def bob() -> User:
    return new_user()
