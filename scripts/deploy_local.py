"""The deploy recipe on one machine, all on loopback: PostgreSQL (DATABASE_URL, or the embedded
one under DATA_DIR), PgBouncer in transaction mode in front of it, N `task-api serve` replicas
through PgBouncer, HAProxy in front of them (health checks on /api/ready, safe retries).

    scripts/deploy_local.sh [--replicas 2] [--port 8080]

Stays in the foreground and prints the URL. SIGHUP (`kill -HUP <pid>`) restarts every replica in
turn (a rolling restart: SIGTERM, exit, start, back in HAProxy, next); Ctrl-C stops everything.
The replicas get the settings of this environment and of `.env` here (README, Configuration),
except DATABASE_URL (PgBouncer's), DB_STATEMENT_CACHE (off) and SHUTDOWN_READY_GRACE_SECONDS
(--ready-grace); DATABASE_LISTEN_URL, where the live streams LISTEN, is PostgreSQL itself
(LISTEN cannot work through PgBouncer's transaction mode) unless set here or in `.env`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file: the stack's package is scripts.local_stack
    sys.path.insert(0, str(ROOT))

from impl.platform.serving import port_taken
from impl.platform.settings import ConfigurationError, Settings, load_settings
from scripts.local_stack.haproxy import CHECK_INTERVAL_MS, FALL, RISE
from scripts.local_stack.stack import READY_GRACE_SECONDS, Stack, running_stack

# Set by the recipe for each replica (METRICS_PORT: a port of its own).
FIXED = {"DATABASE_URL", "DB_STATEMENT_CACHE", "SHUTDOWN_READY_GRACE_SECONDS", "METRICS_PORT"}


def replica_settings() -> dict[str, str]:
    """The settings in this environment, for the replicas (they read `.env` themselves)."""
    names = {name.upper() for name in Settings.model_fields} - FIXED
    return {name: value for name, value in os.environ.items() if name in names and value}


def describe(stack: Stack) -> str:
    lines = [
        f"task-api behind HAProxy: {stack.url}",
        f"  replicas: {', '.join(f'{r.name} {r.url}' for r in stack.replicas)}",
        (f"  health checks: GET /api/ready every {CHECK_INTERVAL_MS} ms, out after {FALL} "
         f"failures, back after {RISE} successes"),
        f"  PgBouncer (transaction mode): {stack.pgbouncer.url}",
        ("  live streams: through HAProxy's `streams` backend; the replicas LISTEN at "
         "DATABASE_LISTEN_URL (PostgreSQL itself unless set)"),
        f"  logs: {stack.replicas[0].directory}",
        ("  Prometheus metrics (loopback, one endpoint per replica): "
         + ", ".join(f"{r.name} {r.metrics_url}" for r in stack.replicas)),
        f"  rolling restart: kill -HUP {os.getpid()}    stop: Ctrl-C",
    ]
    if stack.secret and load_settings().embedded:
        from impl.platform.token_verifier import mint_hs256
        from impl.tasks.seed import DEMO_USERS

        token = mint_hs256(stack.secret, DEMO_USERS["alice"], 24 * 3600)
        lines += ["", "Bearer token for alice (demo data), valid 24 h:", "",
                  f"  curl -H 'Authorization: Bearer {token}' {stack.url}/api/tasks"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--port", type=int, default=8080, help="HAProxy's port on 127.0.0.1")
    parser.add_argument("--ready-grace", type=float, default=READY_GRACE_SECONDS,
                        help="the replicas' SHUTDOWN_READY_GRACE_SECONDS")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be 1 or more")
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"deploy_local: {exc}", file=sys.stderr)
        return 2
    # HAProxy's port is the one fixed port (the rest are free ones): checked before PostgreSQL,
    # PgBouncer and the replicas start, rather than failing in HAProxy after them.
    taken = port_taken("127.0.0.1", args.port)
    if taken:
        print(f"deploy_local: {taken}", file=sys.stderr)
        return 2

    # The replicas' logs outlive the recipe (a run's story is read after Ctrl-C): one folder a
    # run, under DATA_DIR beside the embedded PostgreSQL.
    log_dir = (settings.data_dir / "deploy-logs" / time.strftime("%Y%m%d-%H%M%S")).resolve()

    restart_wanted = threading.Event()
    stopping = threading.Event()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        restart_wanted.set()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        restart_wanted.set()

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    env = replica_settings()
    if settings.database_listen_url:  # from .env too: the stack's default would win over it
        env["DATABASE_LISTEN_URL"] = settings.database_listen_url
    with running_stack(
        args.replicas, database_url=settings.database_url, secret=settings.better_auth_secret,
        data_dir=settings.data_dir, port=args.port, env=replica_settings(),
        ready_grace=args.ready_grace, cwd=Path.cwd(), log_dir=log_dir,
        heartbeat_seconds=settings.sync_heartbeat_seconds,
        request_timeout_seconds=settings.request_head_timeout_seconds, metrics=True,
    ) as stack:
        print(describe(stack), flush=True)
        while not stopping.is_set():
            restart_wanted.wait()
            restart_wanted.clear()
            if stopping.is_set():
                break
            print("rolling restart...", flush=True)
            stack.rolling_restart(lambda step: print(f"  {step}", flush=True))
            print("rolling restart done", flush=True)
        print("stopping: HAProxy, replicas, PgBouncer, PostgreSQL", flush=True)
    print(f"the replicas' logs are kept in {log_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
