"""The Alembic migrations build exactly the schema that impl/tasks/tables.py describes: what
Alembic's comparison sees (tables, columns, types, indexes), and the CHECK constraints, which it
does not compare."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import impl.tasks.tables  # registers the tables (PRIORITIES below uses it too)
import impl.webhooks.tables  # noqa: F401 - registers the tables
from impl.platform.database import connect_options
from impl.tasks.tables import PRIORITIES


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


CHECKS_SQL = (
    "SELECT c.conrelid::regclass::text AS tbl, c.conname, pg_get_constraintdef(c.oid) AS def "
    "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
    "WHERE c.contype = 'c' AND n.nspname = 'public' ORDER BY 1, 2"
)


async def _checks(url: str) -> set[tuple[str, str, str]]:
    connection = await asyncpg.connect(connect_options(url).dsn)
    try:
        return {(r["tbl"], r["conname"], r["def"]) for r in await connection.fetch(CHECKS_SQL)}
    finally:
        await connection.close()


async def test_models_and_migrations_have_the_same_checks(
    database_url: str, fresh_database: str
) -> None:
    """The tables created from the models (in an empty database) and by the migrations carry
    the same CHECK constraints, each as PostgreSQL prints it back (so spelling does not count,
    meaning does)."""
    dsn = connect_options(fresh_database).dsn

    async def creator() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    engine = create_async_engine("postgresql+asyncpg://", async_creator=creator)
    try:
        async with engine.begin() as connection:
            values = ", ".join(f"'{p}'" for p in PRIORITIES)
            await connection.exec_driver_sql(f"CREATE TYPE task_priority AS ENUM ({values})")
            await connection.run_sync(SQLModel.metadata.create_all)
    finally:
        await engine.dispose()
    from_models = await _checks(fresh_database)
    assert from_models, "the models declare CHECK constraints"
    assert await _checks(database_url) == from_models


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
