"""Fixtures: one real PostgreSQL and one real HTTP server per test session; users are fresh
random UUIDs per test, so tests never see each other's tasks."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from impl.db import connect_options
from impl.migrate import upgrade
from impl.token_verifier import mint_hs256
from tests.servers import SECRET, running_server, settings


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        upgrade(url)
        yield url
        return
    import pgserver

    with tempfile.TemporaryDirectory(prefix="task-api-test-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        url = server.get_uri()
        upgrade(url)
        try:
            yield url
        finally:
            server.cleanup()


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
    connection = await asyncpg.connect(connect_options(database_url).dsn)
    try:
        yield connection
    finally:
        await connection.close()


@dataclass
class User:
    id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_user() -> User:
    user_id = uuid.uuid4()
    return User(user_id, mint_hs256(SECRET, user_id))


@pytest.fixture
def alice() -> User:
    return new_user()


@pytest.fixture
def bob() -> User:
    return new_user()
