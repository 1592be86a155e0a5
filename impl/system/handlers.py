"""Handlers for the `system` tag: liveness and readiness. Each receives `resources`, this tag's
part of the app's lifespan state (the `resources` dependency)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from impl.http.envelope import success
from impl.platform import hand_over
from impl.platform.database import Database
from impl.platform.errors import DATABASE_DOWN, Unavailable

STATE_KEY = "system"


@dataclass(frozen=True, slots=True)
class Resources:
    database: Database | None  # None before the lifespan opened it (only readiness needs it)


async def resources(request: Request) -> Resources:
    """The stubs' request-only dependency. Never refuses: liveness answers without a database."""
    found: Resources | None = request.scope.get("state", {}).get(STATE_KEY)
    return found if found is not None else Resources(database=None)


async def get_health(*, resources: Resources) -> Response:
    return success({"status": "ok"})


async def get_readiness(*, resources: Resources) -> Response:
    if hand_over.stopping():  # a load balancer takes this replica out before it closes
        raise Unavailable("Server is stopping")
    if resources.database is None:
        raise Unavailable("Server is starting or stopping")
    try:
        await resources.database.ping()
    except DATABASE_DOWN:
        raise Unavailable() from None
    return success({"status": "ok", "database": "ok"})
