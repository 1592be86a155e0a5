"""The development default: a private PostgreSQL under .data/ (pgserver), and a local secret."""

from __future__ import annotations

import logging
import secrets
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from impl.platform.row_scope import API_ROLE

log = logging.getLogger("task_api.embedded")


def pgserver_module() -> Any:
    """The pgserver package, imported without its word about XDG_RUNTIME_DIR.

    pgserver asks platformdirs for the user's runtime directory when it is imported (for its lock
    file and socket directories); without XDG_RUNTIME_DIR (a container, CI, a plain `su`),
    platformdirs falls back to /tmp/runtime-<uid> and says so with a RuntimeDirWarning, which
    every command that starts the embedded PostgreSQL then printed. That fallback is private to
    the user and exactly what pgserver needs, so this one warning, and only while importing, is
    not shown. Imported here and never at module level: only the embedded mode needs it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set", category=UserWarning)
        import pgserver
    return pgserver


def start_postgres(data_dir: Path) -> tuple[Any, str, bool]:
    """Start (or reuse) the embedded server. Returns (handle, url, created_now). Keep the handle:
    the server stops when the last handle is closed."""
    pgserver = pgserver_module()

    pgdata = (data_dir / "pg").resolve()
    created = not (pgdata / "PG_VERSION").exists()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    return server, server.get_uri(), created


def local_secret(data_dir: Path) -> str:
    """A random HS256 secret kept in .data/, so tokens printed once keep working."""
    path = data_dir / "dev-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def api_role_url(url: str) -> str:
    """`url` (the embedded server's superuser, who migrates and so owns the tables) as the API's
    role instead (migration 0011 creates it): same server and database, no password, since the
    embedded PostgreSQL trusts local connections. The server runs as this role, so that
    row-level security holds it (a superuser passes every policy)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{API_ROLE}@{host}"))
