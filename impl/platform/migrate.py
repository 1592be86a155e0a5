"""Alembic, driven from code: `task-api migrate`, the embedded start-up and the tests use it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Run pending migrations. Synchronous (Alembic runs its own event loop): call it before the
    server's loop starts, or from a thread."""
    command.upgrade(alembic_config(database_url), revision)
