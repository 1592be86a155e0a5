"""`task-api`: serve, migrate, seed, token, config."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging.config
import os
import signal
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from impl.platform.logs import logging_config
from impl.platform.settings import (
    ConfigurationError,
    Settings,
    describe_value,
    load_settings,
    misspelled_variables,
)

log = logging.getLogger("task_api.cli")


def _prepare(settings: Settings) -> tuple[str, Any]:
    """The database URL to use, starting the embedded PostgreSQL when none is configured.
    Returns (url, handle); keep the handle alive while the server runs. The embedded database
    is migrated by its superuser (the tables' owner) and used as the API's role, which owns
    nothing and is held by row-level security (migration 0011 creates it)."""
    if settings.database_url is not None:
        return settings.database_url, None
    from impl.platform.embedded import api_role_url, local_secret, start_postgres
    from impl.platform.migrate import upgrade
    from impl.tasks.seed import seed

    handle, url, created = start_postgres(settings.data_dir)
    if not settings.better_auth_secret:
        settings.better_auth_secret = local_secret(settings.data_dir)
    upgrade(url)
    if created:
        asyncio.run(seed(url))
    return api_role_url(url), handle


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from impl.platform import serving
    from impl.platform.slow_clients import LimitedConfig, RequestLimits
    from impl.platform.token_verifier import mint_hs256
    from impl.tasks.seed import DEMO_USERS

    taken = serving.port_taken(args.host, args.port)
    if taken:
        print(f"task-api serve: {taken}", file=sys.stderr)
        return 2
    if settings.metrics_port is not None:
        if (settings.metrics_host, settings.metrics_port) == (args.host, args.port):
            print("task-api serve: METRICS_PORT is the API's port: give the metrics their own",
                  file=sys.stderr)
            return 2
        taken = serving.port_taken(settings.metrics_host, settings.metrics_port)
        if taken:
            print(f"task-api serve: METRICS_PORT: {taken.replace('--port', 'METRICS_PORT')}",
                  file=sys.stderr)
            return 2
    embedded = settings.embedded
    url, handle = _prepare(settings)
    problem = settings.auth_problem()
    if problem:
        print(f"task-api: refusing to start: {problem}", file=sys.stderr)
        return 2
    # Workers build their app from the environment (impl.asgi): hand them what we resolved.
    os.environ["DATABASE_URL"] = url
    if settings.better_auth_secret:
        os.environ["BETTER_AUTH_SECRET"] = settings.better_auth_secret
    if embedded:
        assert settings.better_auth_secret
        token = mint_hs256(settings.better_auth_secret, DEMO_USERS["alice"], 24 * 3600)
        base = f"http://{args.host}:{args.port}"
        print(
            f"\nEmbedded PostgreSQL under {settings.data_dir}/pg, seeded with demo users "
            f"(alice {DEMO_USERS['alice']}, bob {DEMO_USERS['bob']}).\n"
            f"Bearer token for alice, valid 24 h:\n\n  {token}\n\n"
            f"  curl -H 'Authorization: Bearer {token}' {base}/api/tasks\n"
            f"  docs: {base}/docs\n",
            flush=True,
        )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal with the handler
    # that was installed before it. A no-op handler there lets run() return: the embedded
    # PostgreSQL is then stopped cleanly and the process exits 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    limits = RequestLimits(
        head_timeout=settings.request_head_timeout_seconds,
        body_timeout=settings.request_body_timeout_seconds,
        max_connections=settings.max_connections,
    )
    config = LimitedConfig(
        "impl.asgi:create_from_env",
        limits=limits,
        # Past uvicorn's 2048: a burst of connections waits in the kernel's queue (capped by
        # net.core.somaxconn) rather than having its SYNs dropped and retried a second later.
        backlog=8192,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=logging_config(settings.log_level, settings.log_format,
                                  trace_ids=bool(settings.otel_exporter_otlp_endpoint)),
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=20,
    )
    try:
        with _metrics_endpoint(settings):
            serving.run(config, ready_grace=settings.shutdown_ready_grace_seconds)
    finally:
        if handle is not None:
            handle.cleanup()
    return 0


def _metrics_endpoint(settings: Settings) -> AbstractContextManager[None]:
    """With METRICS_PORT: the Prometheus endpoint of this server (every worker's metrics added
    up), on its own port, before any worker starts."""
    if settings.metrics_port is None:
        return nullcontext()
    from impl.platform.metrics import serving_metrics

    log.info("metrics: http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return serving_metrics(settings.metrics_host, settings.metrics_port)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from impl.platform.migrate import upgrade

    if settings.embedded:
        _handle = _prepare(settings)  # migrates, as the embedded server's owner
    else:
        assert settings.database_url
        upgrade(settings.database_url)
    print("migrations applied")
    return 0


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from impl.tasks.seed import DEMO_USERS, seed

    url, _handle = _prepare(settings)
    inserted = asyncio.run(seed(url, reset=args.reset))
    users = ", ".join(f"{name} {user_id}" for name, user_id in DEMO_USERS.items())
    print(f"seeded {inserted} tasks for {users}")
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from impl.platform import user_ids
    from impl.platform.embedded import local_secret
    from impl.platform.token_verifier import mint_hs256
    from impl.tasks.seed import DEMO_USERS

    # The demo users by name (`token alice`): their ids are UUIDs nobody types. Any other
    # argument is the user id itself, as the token's `sub`.
    user_id = DEMO_USERS.get(args.user_id, args.user_id)
    problem = user_ids.problem(user_id)
    if problem:
        print(f"task-api token: USER_ID is not a user id: {problem}", file=sys.stderr)
        return 2
    secret = settings.better_auth_secret or (
        local_secret(settings.data_dir) if settings.embedded else None
    )
    if not secret:
        print("task-api token: BETTER_AUTH_SECRET is not set", file=sys.stderr)
        return 2
    if user_id != args.user_id:  # said on stderr: stdout stays the bare token for $(...)
        print(f"task-api token: {args.user_id} is the demo user {user_id}", file=sys.stderr)
    print(mint_hs256(secret, user_id, args.ttl))
    return 0


def _seconds_above_zero(text: str) -> int:
    """--ttl: a token that expires at once (0) or before it is minted (-5) is never wanted."""
    try:
        seconds = int(text)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds above 0")
    return seconds


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    """Every setting as the commands see it, after the environment and .env: one NAME=value line
    each, the value in JSON (null: unset), secrets masked."""
    for field in Settings.model_fields:
        value = describe_value(field, getattr(settings, field))
        print(f"{field.upper()}={json.dumps(value)}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="task-api", description="Contract-first task API")
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(handler=cmd_serve)
    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(handler=cmd_migrate)
    seed = commands.add_parser("seed", help="load the demo users and tasks")
    seed.add_argument("--reset", action="store_true", help="delete the demo users' tasks first")
    seed.set_defaults(handler=cmd_seed)
    token = commands.add_parser("token", help="mint an HS256 bearer token for local use")
    token.add_argument(
        "user_id", metavar="USER_ID",
        help="the token's sub; the demo users' names, alice and bob, stand for their ids",
    )
    token.add_argument(
        "--ttl", type=_seconds_above_zero, default=3600, help="seconds above 0 (default 3600)"
    )
    token.set_defaults(handler=cmd_token)
    config = commands.add_parser(
        "config", help="print the settings read from the environment and .env (secrets masked)"
    )
    config.set_defaults(handler=cmd_config)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"task-api: {exc}", file=sys.stderr)
        return 2
    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
    logging.captureWarnings(True)  # Python warnings in the same format, not bare text
    for line in misspelled_variables():
        log.warning(line)
    result: int = args.handler(args, settings)
    return result


if __name__ == "__main__":
    sys.exit(main())
