"""Real servers for the tests: PostgreSQL (pgserver or TEST_DATABASE_URL) and uvicorn over HTTP."""

from __future__ import annotations

import secrets
import string
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from starlette.routing import BaseRoute

from impl.app import create_app
from impl.platform.database import connect_options, set_codecs
from impl.platform.embedded import api_role_url
from impl.platform.settings import Settings
from scripts.local_stack.processes import free_port, stop  # also the tests' names
from tests.support.thread_server import serving

SECRET = "test-secret-" + "x" * 40
ALPHANUMERIC = string.ascii_letters + string.digits


def random_user_id() -> str:
    """A user id as Better Auth makes them by default: 32 random letters and digits."""
    return "".join(secrets.choice(ALPHANUMERIC) for _ in range(32))
# The console script of this environment, to run the server exactly as users do.
TASK_API = str(Path(sys.executable).parent / "task-api")


# A database URL -> the URL of a pooler in front of it. Set by conftest when
# TEST_THROUGH_PGBOUNCER=1: every server the tests build for that database then goes through
# PgBouncer (transaction mode, so without statement cache), as it would behind Neon's pooler.
POOLED: dict[str, str] = {}


def settings(database_url: str, **overrides: Any) -> Settings:
    """Settings of an API server for the database at `database_url` (its owner's URL, as the
    tests migrate with it): the server connects as the API's role, which row-level security
    holds (migration 0011), never as the owner."""
    values: dict[str, Any] = {
        "database_url": api_role_url(database_url),
        "better_auth_secret": SECRET,
        "db_pool_min_size": 1,
        "log_level": "WARNING",
        # The limiter runs (its headers are on every answer) but never limits the suite's own
        # bursts; tests/http/test_rate_limit_and_quota.py sets real limits.
        "rate_limit_per_second": 1_000_000,
        "rate_limit_burst": 1_000_000,
        # Every server on the session database would otherwise claim every test's webhook
        # deliveries, with its own settings (a default server refuses the tests' receivers on
        # 127.0.0.1): only the servers of the webhook tests deliver.
        "webhook_delivery": False,
    }
    if database_url in POOLED:
        # Queries through the pooler; the live streams LISTEN on a direct connection, as
        # production does with DATABASE_LISTEN_URL (LISTEN cannot work through the pooler).
        values.update(database_url=POOLED[database_url], db_statement_cache=False,
                      database_listen_url=api_role_url(database_url))
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def server_environment(database_url: str) -> dict[str, str]:
    """DATABASE_URL (and DB_STATEMENT_CACHE) for a `task-api serve` subprocess: through
    PgBouncer in the PgBouncer pass, as settings() does for in-process servers."""
    if database_url in POOLED:
        return {"DATABASE_URL": POOLED[database_url], "DB_STATEMENT_CACHE": "false"}
    return {"DATABASE_URL": api_role_url(database_url)}


def wait_ready(process: subprocess.Popen[Any], base_url: str, log_path: Path,
               timeout: float = 60) -> None:
    """Until the `task-api serve` process at base_url answers /api/ready with 200; fails with
    its log's tail when it exits or is not ready in `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, (
            f"task-api serve exited ({process.poll()}):\n{log_path.read_text()[-5000:]}")
        try:
            if httpx.get(f"{base_url}/api/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"task-api serve not ready in {timeout:.0f} s:\n{log_path.read_text()[-5000:]}")


@contextmanager
def running_server(
    app_settings: Settings, extra_routes: Sequence[BaseRoute] = ()
) -> Iterator[str]:
    """uvicorn serving create_app(settings) on a free loopback port, in a thread; extra_routes
    are added to the app's router (a test's own route, e.g. one that fails)."""
    app = create_app(app_settings)
    app.router.routes.extend(extra_routes)
    with serving(app, lifespan="on") as port:
        yield f"http://127.0.0.1:{port}"


class StoppablePostgres:
    """A private PostgreSQL on a loopback TCP port (pgserver's binaries and initdb) that a test
    stops, crashes, freezes and starts again, always at the same URL. The session database is
    never touched. As root, pgserver runs PostgreSQL as its own system user: so does pg_ctl here.
    """

    def __init__(self, directory: Path) -> None:
        from impl.platform.embedded import pgserver_module

        pgserver = pgserver_module()

        self.pgdata = directory / "pg"
        self._server = pgserver.get_server(self.pgdata, cleanup_mode="delete")  # initdb, start
        self._user = self._server.system_user
        self._pg_ctl = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
        self._ctl_log = directory / "pg_ctl.out"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._frozen: list[Any] = []
        self._run_pg_ctl("-w", "-m", "fast", "stop")  # pgserver's own start: Unix socket only
        self.start()

    def _run_pg_ctl(self, *args: str) -> None:
        with self._ctl_log.open("a") as out:  # files, not pipes: the postmaster inherits them
            subprocess.run(
                [str(self._pg_ctl), "-D", str(self.pgdata), *args], user=self._user,
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=True, timeout=60,
            )

    @property
    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def start(self) -> None:
        """Start and wait until it accepts connections (pg_ctl -w)."""
        self._run_pg_ctl(
            "-w", "-t", "30", "-l", str(self.pgdata / "log"),
            "-o", f"-h 127.0.0.1 -p {self.port} -k ''", "start",  # TCP only
        )

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: "fast" (clients disconnected, clean shutdown) or "immediate" (a crash:
        no shutdown checkpoint, recovery from WAL at the next start)."""
        self._run_pg_ctl("-w", "-m", mode, "stop")

    def _processes(self) -> list[Any]:
        import psutil

        pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children(recursive=True)]

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend: a database that hangs instead of failing
        (a stalled VM, a network partition). Connects and queries get no answer at all."""
        import signal

        self._frozen = self._processes()
        for process in self._frozen:
            process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        import signal

        for process in self._frozen:
            try:
                process.send_signal(signal.SIGCONT)
            except Exception:  # noqa: BLE001, S110 - a backend may have exited meanwhile
                pass
        self._frozen = []

    def close(self) -> None:
        self.thaw()
        if self.running:
            try:
                self.stop("immediate")
            except subprocess.CalledProcessError:
                pass
        self._server.cleanup()  # deletes the data directory


@asynccontextmanager
async def direct_connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection straight to PostgreSQL (never through PgBouncer), to check what the API
    really wrote."""
    connection = await asyncpg.connect(connect_options(database_url).dsn)
    await set_codecs(connection)  # jsonb as the API reads it
    try:
        yield connection
    finally:
        await connection.close()


@contextmanager
def task_api_serve(env: dict[str, str], log_path: Path, workers: int = 1
                   ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`task-api serve` as users start it, on a free loopback port, with `env` (plus PATH and
    HOME) as its whole environment and its output in log_path; ready when this yields its base
    URL and process; SIGTERM (then SIGKILL) when the block ends."""
    import os

    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    environment.update(env)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [TASK_API, "serve", "--port", str(port), "--workers", str(workers)],
            env=environment, cwd=log_path.parent, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, base_url, log_path)
        yield base_url, process
    finally:
        stop(process, 30)
