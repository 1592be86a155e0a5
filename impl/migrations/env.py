"""Alembic environment: async SQLAlchemy on the same asyncpg connection settings as the app."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import context
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import impl.tasks.tables  # registers the tables on SQLModel.metadata (Xid8 below uses it too)
import impl.webhooks.tables  # noqa: F401 - registers its tables on SQLModel.metadata
from impl.platform.database import connect_options
from impl.tasks.tables import Xid8

target_metadata = SQLModel.metadata
# SQLAlchemy reflects no xid8 (migration 0007's change_xid): named here, autogenerate compares
# it like any other type instead of warning and skipping it.
ischema_names.setdefault("xid8", Xid8)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    options = connect_options(url)

    async def creator() -> asyncpg.Connection:
        # The pasted URL goes through our translation, not SQLAlchemy's URL parser, which
        # would pass sslmode/channel_binding to asyncpg as unknown keyword arguments.
        return await asyncpg.connect(options.dsn, statement_cache_size=0)

    engine = create_async_engine("postgresql+asyncpg://", async_creator=creator)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


url = context.config.attributes.get("database_url")
if context.is_offline_mode() or not url:
    raise SystemExit("migrations run online only: task-api migrate")
asyncio.run(_run_async(url))
