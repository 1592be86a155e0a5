"""The Alembic migrations build exactly the schema that impl/tasks/tables.py describes."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import impl.tasks.tables  # noqa: F401 - registers the tables
from impl.platform.database import connect_options


async def test_models_and_migrations_agree(database_url: str) -> None:
    dsn = connect_options(database_url).dsn

    async def creator() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    engine = create_async_engine("postgresql+asyncpg://", async_creator=creator)
    try:
        async with engine.connect() as connection:
            diff: list[Any] = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), SQLModel.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


@pytest.mark.parametrize(
    ("columns", "values"),
    [
        ("title", ["   "]),
        ("title", [""]),
        ("title, description", ["ok", "d" * 2001]),
        ("title, tags", ["ok", [f"t{i}" for i in range(11)]]),
        ("title, completed", ["ok", True]),  # completed without completed_at
        ("title, version", ["ok", 0]),
    ],
)
async def test_database_refuses_what_the_contract_refuses(
    db: asyncpg.Connection, columns: str, values: list[Any]
) -> None:
    """CHECK constraints hold even for writes that bypass the API."""
    placeholders = ", ".join(f"${i + 3}" for i in range(len(values)))
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            f"INSERT INTO tasks (id, user_id, {columns}) VALUES ($1, $2, {placeholders})",
            uuid.uuid4(), "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY", *values,
        )
