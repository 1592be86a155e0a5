"""PgBouncer in transaction mode (Debian's package, scripts/ensure_pgbouncer.sh) in front of a
PostgreSQL, on a free loopback port: what Neon's `-pooler` endpoint is. The test suite's
PgBouncer pass and the local deploy recipe both run it from here.

Only the binary is used: a generated configuration in a temporary directory, a foreground
process owned by its caller, no system service. The admin console (database `pgbouncer`) is read
with psql from the pgserver package: it speaks only the simple query protocol, which asyncpg
does not use for results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from scripts.local_stack.processes import free_port, stop, wait_for_port

PGBOUNCER_CANDIDATES = ("pgbouncer", "/usr/sbin/pgbouncer")
# Root: PgBouncer refuses to run as root. pgserver (as root) runs PostgreSQL as this system
# user, with its Unix socket in a directory only that user can enter: PgBouncer runs as it too.
SYSTEM_USER = "pgserver"


def pgbouncer_binary() -> str | None:
    for candidate in PGBOUNCER_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def psql_binary() -> str:
    from impl.platform.embedded import pgserver_module

    pgserver = pgserver_module()

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql")


@dataclass(frozen=True)
class Upstream:
    """Where a PostgreSQL URL points, in PgBouncer's [databases] terms."""

    host: str
    port: int
    dbname: str
    user: str
    password: str | None
    sslmode: str | None

    @classmethod
    def from_url(cls, url: str) -> Upstream:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        host = query.get("host") or parts.hostname or "/tmp"
        port = int(query.get("port") or parts.port or 5432)
        user = unquote(parts.username or query.get("user") or "postgres")
        password = unquote(parts.password) if parts.password else query.get("password")
        dbname = unquote(parts.path.lstrip("/")) or query.get("dbname") or user
        return cls(host, port, dbname, user, password or None, query.get("sslmode"))

    def connstr(self) -> str:
        fields = {"host": self.host, "port": str(self.port), "dbname": self.dbname,
                  "user": self.user}
        if self.password:
            fields["password"] = self.password
        return " ".join(f"{k}={_quote(v)}" for k, v in fields.items())


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "/._-" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class PgBouncer:
    process: subprocess.Popen[bytes]
    port: int
    dbname: str
    user: str
    directory: Path

    @property
    def url(self) -> str:
        """What the API is given as DATABASE_URL: the pooler, not the database."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}"

    @property
    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def admin(self, command: str) -> list[dict[str, str]]:
        """A SHOW command on the admin console, as rows of column -> text."""
        result = subprocess.run(
            [psql_binary(), "-X", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
             "-d", "pgbouncer", "--csv", "-c", command],
            capture_output=True, text=True, timeout=10, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pgbouncer admin {command!r} failed: {result.stderr}")
        import csv

        return list(csv.DictReader(result.stdout.splitlines()))

    def stats(self) -> dict[str, str]:
        """This database's line of SHOW STATS (total_xact_count, total_query_count...)."""
        for row in self.admin("SHOW STATS"):
            if row["database"] == self.dbname:
                return row
        return {}


def _config(upstream: Upstream, port: int, directory: Path, settings: dict[str, str]) -> str:
    values = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "any",  # trust on loopback; the [databases] line names the server user
        "pool_mode": "transaction",
        "max_client_conn": "1000",
        "default_pool_size": "20",
        "logfile": str(directory / "pgbouncer.log"),
        "pidfile": str(directory / "pgbouncer.pid"),
        "admin_users": upstream.user,
        "stats_users": upstream.user,
        # Neon's pooler, and ours: clients may send these; PgBouncer refuses unknown ones.
        "ignore_startup_parameters": "extra_float_digits,options,search_path",
        **settings,
    }
    if upstream.sslmode and upstream.sslmode not in ("disable", "allow", "prefer"):
        values["server_tls_sslmode"] = upstream.sslmode
    lines = ["[databases]", f"{upstream.dbname} = {upstream.connstr()}", "", "[pgbouncer]"]
    lines += [f"{key} = {value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


@contextmanager
def running_pgbouncer(database_url: str, **settings: str) -> Iterator[PgBouncer]:
    """PgBouncer (transaction mode) in front of database_url, on a free loopback port.
    Keyword arguments override [pgbouncer] settings (e.g. server_login_retry="1")."""
    binary = pgbouncer_binary()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed: run scripts/ensure_pgbouncer.sh")
    upstream = Upstream.from_url(database_url)
    port = free_port()
    as_root = os.geteuid() == 0
    with tempfile.TemporaryDirectory(prefix="task-api-pgbouncer-") as tmp:
        directory = Path(tmp)
        ini = directory / "pgbouncer.ini"
        ini.write_text(_config(upstream, port, directory, settings))
        user = None
        if as_root:
            import pwd

            entry = pwd.getpwnam(SYSTEM_USER)
            user = SYSTEM_USER
            for path in (directory, ini):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        process = subprocess.Popen(
            [binary, "--quiet", str(ini)], user=user, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            log = directory / "pgbouncer.log"
            try:
                wait_for_port(port, process, "pgbouncer", timeout=15)
            except RuntimeError as exc:
                text = log.read_text(errors="replace") if log.exists() else ""
                raise RuntimeError(f"{exc}\n{text}") from None
            yield PgBouncer(process, port, upstream.dbname, upstream.user, directory)
        finally:
            stop(process, timeout=10)
