"""A private PostgreSQL for a benchmark script: pgserver in a temporary directory, migrated to
the head, deleted at the end."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from impl.platform.embedded import pgserver_module
from impl.platform.migrate import upgrade


@contextmanager
def private_postgres(prefix: str) -> Iterator[str]:
    """Its URL (the superuser's). Call before the event loop: Alembic's env runs its own."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        server = pgserver_module().get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            url = server.get_uri()
            upgrade(url)
            yield url
        finally:
            server.cleanup()
