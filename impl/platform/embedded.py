"""The development default: a private PostgreSQL under .data/ (pgserver), and a local secret."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

log = logging.getLogger("task_api.embedded")


def start_postgres(data_dir: Path) -> tuple[Any, str, bool]:
    """Start (or reuse) the embedded server. Returns (handle, url, created_now). Keep the handle:
    the server stops when the last handle is closed."""
    import pgserver  # imported here: only the embedded mode needs it

    pgdata = (data_dir / "pg").resolve()
    created = not (pgdata / "PG_VERSION").exists()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    return server, server.get_uri(), created


def local_secret(data_dir: Path) -> str:
    """A random HS256 secret kept in .data/, so tokens printed once keep working."""
    path = data_dir / "dev-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
