"""The whole recipe on loopback: PostgreSQL (given, or the embedded one under DATA_DIR), PgBouncer
in transaction mode in front of it, N `task-api serve` replicas through PgBouncer (statement
cache off) that LISTEN for their live streams on PostgreSQL directly (DATABASE_LISTEN_URL:
LISTEN cannot work through a transaction pooler), HAProxy in front of the replicas. And the rolling restart: each replica in turn
stopped with SIGTERM (its hand-over), started again, and put back by HAProxy before the next."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from impl.platform.settings import Settings
from scripts.local_stack.haproxy import CHECK_INTERVAL_MS, FALL, HAProxy, running_haproxy
from scripts.local_stack.pgbouncer import PgBouncer, running_pgbouncer
from scripts.local_stack.replicas import Replica

# How long a stopping replica keeps its listener open with /api/ready at 503, at least: twice
# what HAProxy needs to see FALL failed checks. The replica also waits for its requests to stop.
READY_GRACE_SECONDS = 2 * FALL * CHECK_INTERVAL_MS / 1000


@dataclass
class Stack:
    database_url: str  # direct, for migrations and checks
    secret: str | None  # the HS256 secret the replicas were given, if any
    pgbouncer: PgBouncer
    replicas: list[Replica]
    haproxy: HAProxy
    restarts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.haproxy.url

    def wait_all_up(self, timeout: float = 30) -> None:
        for replica in self.replicas:
            self.haproxy.wait_status(replica.name, "UP", timeout)

    def restart(self, replica: Replica) -> dict[str, Any]:
        """SIGTERM, wait for the exit, start again, wait until HAProxy has it UP."""
        began = time.monotonic()
        code, stop_seconds = replica.stop()
        if code != 0:
            raise RuntimeError(f"replica {replica.name} exited with {code} on SIGTERM:\n"
                               f"{replica.log()[-3000:]}")
        start_seconds = replica.start()
        up_seconds = self.haproxy.wait_status(replica.name, "UP", timeout=30)
        step = {"replica": replica.name, "exit": code, "stop_s": round(stop_seconds, 2),
                "start_s": round(start_seconds, 2), "up_after_s": round(up_seconds, 2),
                "total_s": round(time.monotonic() - began, 2)}
        self.restarts.append(step)
        return step

    def rolling_restart(self, report: Callable[[dict[str, Any]], None] = lambda step: None
                        ) -> list[dict[str, Any]]:
        self.wait_all_up()
        steps = []
        for replica in self.replicas:
            step = self.restart(replica)
            report(step)
            steps.append(step)
        return steps


def _prepare_database(database_url: str | None, data_dir: Path, secret: str | None,
                      stack: ExitStack) -> tuple[str, str | None]:
    """(direct URL, HS256 secret): the given database migrated, or the embedded one started,
    migrated and seeded on first run, as `task-api serve` does (its URL then the API's role's,
    held by row-level security, as `task-api serve` uses it)."""
    from impl.platform.migrate import upgrade

    if database_url is None:
        from impl.platform.embedded import api_role_url, local_secret, start_postgres
        from impl.tasks.seed import seed

        handle, database_url, created = start_postgres(data_dir)
        stack.callback(handle.cleanup)
        secret = secret or local_secret(data_dir)
        upgrade(database_url)
        if created:
            asyncio.run(seed(database_url))
        database_url = api_role_url(database_url)
    else:
        upgrade(database_url)
    return database_url, secret


@contextmanager
def running_stack(
    replicas: int = 2, *, database_url: str | None = None, secret: str | None = None,
    data_dir: Path = Path(".data"), port: int | None = None, env: dict[str, str] | None = None,
    ready_grace: float = READY_GRACE_SECONDS, cwd: Path | None = None,
    log_dir: Path | None = None,
    heartbeat_seconds: float | None = None,
    request_timeout_seconds: float | None = None,
    metrics: bool = False,
) -> Iterator[Stack]:
    """The stack, ready (every replica UP in HAProxy); stopped in reverse order on exit.
    `env`: more settings for the replicas (RATE_LIMIT_PER_SECOND, LOG_LEVEL...; a
    DATABASE_LISTEN_URL there wins over the direct URL); `cwd`: where they run (its `.env` is
    read for what `env` does not set). `log_dir`: where the replicas' logs go and stay after
    the stack stops; None: a temporary folder, removed with the stack. The replicas' log level
    and format are the user's (environment, `.env`): nothing here overrides them (their logs
    are files, so `auto` writes JSON lines). `heartbeat_seconds`: their SYNC_HEARTBEAT_SECONDS
    when `.env` sets it (HAProxy's stream timeout follows it), else from `env` or the default;
    `request_timeout_seconds` likewise their REQUEST_HEAD_TIMEOUT_SECONDS (HAProxy's
    `timeout http-request` follows it). `metrics`: each replica exports its Prometheus metrics
    on a loopback port of its own."""
    with ExitStack() as stack:
        direct_url, secret = _prepare_database(database_url, data_dir, secret, stack)
        bouncer = stack.enter_context(running_pgbouncer(direct_url))
        if log_dir is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="task-api-replicas-")))
        else:
            directory = log_dir
            directory.mkdir(parents=True, exist_ok=True)
        replica_env = {
            # The live streams' wake-ups: LISTEN on PostgreSQL itself, not through PgBouncer.
            "DATABASE_LISTEN_URL": direct_url,
            **(env or {}),
            "DATABASE_URL": bouncer.url, "DB_STATEMENT_CACHE": "false",
            "SHUTDOWN_READY_GRACE_SECONDS": str(ready_grace),
        }
        if secret:
            replica_env["BETTER_AUTH_SECRET"] = secret
        members = [Replica(f"r{i}", replica_env, directory, cwd, metrics=metrics)
                   for i in range(replicas)]
        for member in members:
            stack.callback(member.close)
            member.start()
        if heartbeat_seconds is None:
            heartbeat_seconds = float(replica_env.get(
                "SYNC_HEARTBEAT_SECONDS", Settings.model_fields["sync_heartbeat_seconds"].default))
        if request_timeout_seconds is None:
            request_timeout_seconds = float(replica_env.get(
                "REQUEST_HEAD_TIMEOUT_SECONDS",
                Settings.model_fields["request_head_timeout_seconds"].default))
        haproxy = stack.enter_context(running_haproxy(
            [(m.name, m.port) for m in members], port=port, heartbeat_seconds=heartbeat_seconds,
            request_timeout_seconds=request_timeout_seconds))
        result = Stack(direct_url, secret, bouncer, members, haproxy)
        result.wait_all_up()
        yield result
