"""The one place that builds the application: generated routes, middleware, error handlers,
the contract and docs, and the lifespan that opens and closes the process-wide resources."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from fastapi.routing import APIRoute
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp

import impl.system.handlers
import impl.tasks.handlers
import impl.webhooks.handlers
from generated.routes import router
from impl.http.auth import STATE_KEY as AUTHENTICATION
from impl.http.auth import Authentication, RateLimits
from impl.http.contract import install_contract_routes
from impl.http.errors import install_error_handlers
from impl.http.guards import RequestGuardMiddleware
from impl.http.middleware import LastResortMiddleware, RequestContextMiddleware
from impl.http.observe import RequestObserver
from impl.http.rate_limit import RateLimiter
from impl.mcp import install_mcp
from impl.platform.database import Database
from impl.platform.metrics import Metrics, forget_this_process
from impl.platform.notifications import Notifications
from impl.platform.periodic import running_every, running_paced
from impl.platform.settings import Settings
from impl.platform.token_verifier import TokenVerifier
from impl.platform.tracing import install_tracing
from impl.platform.wake_ups import WakeUps
from impl.tasks.change_wake_ups import WAKE_SQL
from impl.tasks.changes import ChangeFeed
from impl.tasks.cursor import CursorCodec
from impl.tasks.feed_watch import WATCH_SECONDS, FeedWatch
from impl.tasks.live import LiveStreams, StreamSettings
from impl.tasks.reminder_scheduler import ReminderScheduler
from impl.tasks.store import TaskStore
from impl.tasks.sync_token import SyncTokenCodec
from impl.webhooks import queue as webhook_queue
from impl.webhooks.sender import Sender
from impl.webhooks.store import WebhookStore
from impl.webhooks.worker import DeliveryWorker, WorkerSettings, delivering

log = logging.getLogger("task_api")

# Finished webhook deliveries are listed this long, then purged.
WEBHOOK_HISTORY_SECONDS = 7 * 86400


def _cursor_secret(settings: Settings) -> bytes:
    if settings.cursor_secret:
        return settings.cursor_secret.encode()
    if settings.better_auth_secret:  # stable across restarts and replicas
        return hashlib.sha256(b"task-api cursor\0" + settings.better_auth_secret.encode()).digest()
    log.warning("no CURSOR_SECRET: list cursors will not survive a restart or span replicas")
    return secrets.token_bytes(32)


def _listen_url(settings: Settings, database: Database) -> str | None:
    """Where the live streams LISTEN: DATABASE_LISTEN_URL, else the database's own URL unless
    it is a transaction pooler (statement cache off), where LISTEN cannot work: None, and the
    streams poll."""
    if settings.database_listen_url:
        return settings.database_listen_url
    if database.options.statement_cache_size:
        return settings.database_url
    log.warning("DATABASE_URL is a transaction pooler: live streams poll every %.1f s; set "
                "DATABASE_LISTEN_URL to a direct connection for instant events",
                settings.sync_poll_seconds)
    return None


def _rate_limits(settings: Settings) -> RateLimits | None:
    if not settings.rate_limit_per_second:
        return None
    rate, burst = settings.rate_limit_per_second, settings.rate_limit_burst
    return RateLimits(
        per_user=RateLimiter("per-user", rate, burst),
        per_address=RateLimiter("per-address", rate, burst),
    )


class TaskApi(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        """FastAPI's stack without three layers every request would cross for nothing here:
        the telemetry observer (telemetry is off), the body-size limiter (no limit is set:
        RequestGuardMiddleware limits bodies) and the exit stack for uploaded files (only
        FastAPI's own request handler uses it: create_app opens it on the routes that run
        that handler)."""
        error_handler = None
        handlers = {}
        for key, value in self.exception_handlers.items():
            if key in (500, Exception):
                error_handler = value
            else:
                handlers[key] = value
        middleware = [
            Middleware(ServerErrorMiddleware, handler=error_handler, debug=self.debug),
            *self.user_middleware,
            Middleware(ExceptionMiddleware, handlers=handlers, debug=self.debug),
        ]
        app: ASGIApp = self.router
        for cls, args, kwargs in reversed(middleware):
            app = cls(app, *args, **kwargs)
        return app


def create_app(settings: Settings) -> FastAPI:
    database_url = settings.database_url
    if database_url is None:
        raise ValueError("create_app needs settings.database_url")
    # Always there, so rare events (a JWKS fetch, later a reminder or a webhook) count without
    # a check; the per-request ones (the middleware, the pool) only when they are exported.
    metrics = Metrics()
    exported = metrics if settings.metrics_port else None
    verifier = TokenVerifier(settings, metrics)
    tracing = install_tracing(settings.otel_exporter_otlp_endpoint)

    rate_limits = _rate_limits(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        """Opens what the requests use and hands it to them: Starlette gives every request a copy
        of the yielded state (`request.state`), from which each tag's `resources` dependency
        and the auth dependency take their part (impl/http/state.py)."""
        database = Database(database_url, settings, exported,
                            tracing.tracer if tracing is not None else None)
        await database.open()
        await verifier.start()
        listen_url = _listen_url(settings, database)
        notifications = Notifications(listen_url, "task_changes")
        await notifications.start()
        # Sent after each write commits, never by the writing transaction (migration 0010);
        # what no wake-up announces, each replica's feed watch finds within a second.
        wake_ups = WakeUps(database, WAKE_SQL)
        feed_watch = FeedWatch(database, notifications)
        secret = _cursor_secret(settings)
        changes = ChangeFeed(database, settings.sync_retention_seconds)
        sync_tokens = SyncTokenCodec(secret)
        live = LiveStreams(changes, sync_tokens, notifications, StreamSettings(
            heartbeat_seconds=settings.sync_heartbeat_seconds,
            poll_seconds=settings.sync_poll_seconds,
            max_per_user=settings.sync_max_streams_per_user,
        ))
        metrics.sample_every_second(metrics.pool_size, lambda: database.pool_sizes()[0])
        metrics.sample_every_second(metrics.pool_in_use, lambda: database.pool_sizes()[1])
        metrics.sample_every_second(metrics.pool_max, lambda: settings.db_pool_max_size)
        metrics.sample_every_second(metrics.pool_waiting, lambda: database.waiting)
        metrics.sample_every_second(metrics.open_streams, lambda: live.open_streams)
        state = {
            AUTHENTICATION: Authentication(verifier, rate_limits),
            impl.tasks.handlers.STATE_KEY: impl.tasks.handlers.Resources(
                store=TaskStore(database, settings.max_tasks_per_user, wake_ups),
                cursors=CursorCodec(secret),
                changes=changes,
                sync_tokens=sync_tokens,
                live=live,
            ),
            impl.webhooks.handlers.STATE_KEY: impl.webhooks.handlers.Resources(
                store=WebhookStore(database, settings.max_webhooks_per_user,
                                   settings.webhook_secret_grace_seconds),
                allow_http=settings.webhook_allow_http,
                allow_private=settings.webhook_allow_private_addresses,
            ),
            impl.system.handlers.STATE_KEY: impl.system.handlers.Resources(database=database),
        }
        # Webhook deliveries: a worker in every replica, woken by the commits that record them.
        # Without a listener (a pooler and no DATABASE_LISTEN_URL) the worker polls every second.
        webhook_wakeups = Notifications(listen_url, "webhook_deliveries")
        await webhook_wakeups.start()
        sender = Sender(timeout_seconds=settings.webhook_timeout_seconds,
                        allow_private=settings.webhook_allow_private_addresses)
        worker = DeliveryWorker(database, webhook_wakeups, sender, WorkerSettings(
            concurrency=settings.webhook_worker_concurrency,
            max_in_flight_per_endpoint=settings.webhook_max_in_flight_per_endpoint,
            timeout_seconds=settings.webhook_timeout_seconds,
            retry_base_seconds=settings.webhook_retry_base_seconds,
            retry_for_seconds=settings.webhook_retry_for_seconds,
        ), metrics)

        async def purge_deliveries() -> None:
            async with database.connection() as connection:
                await webhook_queue.purge(connection, WEBHOOK_HISTORY_SECONDS)

        # Everything built so far (the app, the models, the routes) lives as long as the
        # process: moved out of the collector's sight, it no longer makes the periodic full
        # collections long, which showed up as p99 latency.
        gc.collect()
        gc.freeze()
        purge_every = min(3600.0, max(settings.sync_retention_seconds / 4, 1.0))
        async def count_fired(fired: list[dict[str, Any]]) -> None:
            metrics.reminders_fired.inc(len(fired))
            for reminder in fired:
                lag = (reminder["fired_at"] - reminder["remind_at"]).total_seconds()
                metrics.reminder_lag.observe(max(lag, 0.0))

        reminders = ReminderScheduler(
            database, settings.reminder_poll_seconds, settings.reminder_batch_size,
            on_fired=count_fired, wake_ups=wake_ups,
        )
        sampling: AbstractAsyncContextManager[None] = (
            running_every(1.0, metrics.publish_now, "metrics publish") if exported
            else nullcontext()
        )
        try:
            async with (
                running_every(purge_every, changes.purge_tombstones, "tombstone purge"),
                running_every(WATCH_SECONDS, feed_watch.poll, "feed watch"),
                running_paced(settings.reminder_poll_seconds, reminders.fire_due, "reminders"),
                sampling,
                running_every(3600.0, purge_deliveries, "webhook delivery purge"),
                delivering(worker) if settings.webhook_delivery else contextlib.nullcontext(),
            ):
                yield state
        finally:
            await wake_ups.stop()
            await sender.close()
            await webhook_wakeups.stop()
            await notifications.stop()
            await database.close()
            if exported is not None:
                metrics.publish()  # what was counted since the last publish
            if tracing is not None:
                tracing.provider.shutdown()  # exports what is still buffered
            forget_this_process()

    app = TaskApi(
        title="Task API",
        lifespan=lifespan,
        openapi_url=None,  # the hand-written contract is served instead, see contract.py
        # No OpenTelemetry here: FastAPI would otherwise look up its providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,
        redoc_url=None,
    )
    # The generated routes go straight into the app's router: include_router() would wrap them
    # in a router include that FastAPI walks on every request.
    app.router.routes.extend(router.routes)
    install_contract_routes(app)
    install_mcp(app, settings.cors_origins)  # /mcp: the task operations as AI-assistant tools
    for route in app.router.routes:
        # The routes that run FastAPI's own request handler (the contract's documents; the
        # generated ones have their own, impl/http/route.py) need its file exit stack.
        if isinstance(route, APIRoute) and not getattr(route, "planned", False):
            route.app = AsyncExitStackMiddleware(route.app)
    install_error_handlers(app)
    app.add_middleware(RequestGuardMiddleware, max_body_bytes=settings.max_body_bytes)
    # Inside CORSMiddleware: a failure's envelope gets the CORS headers like any answer.
    app.add_middleware(LastResortMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization", "Content-Type", "If-Match", "Idempotency-Key", "Last-Event-ID"
            ],
            expose_headers=[
                "ETag", "Location", "X-Request-ID", "Retry-After", "RateLimit", "RateLimit-Policy"
            ],
        )
    # Added last, so it runs first: every response, even CORS and guard ones, gets an id, is
    # counted and traced (when metrics or tracing are on).
    observer = None
    if exported is not None or tracing is not None:
        observer = RequestObserver(exported, tracing.tracer if tracing is not None else None,
                                   tracing.root_ratio if tracing is not None else None)
    app.add_middleware(RequestContextMiddleware, observer=observer)
    return app
