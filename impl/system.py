"""Handlers for the `system` tag: liveness and readiness."""

from __future__ import annotations

from starlette.responses import Response

from impl import hand_over, runtime
from impl.envelope import success
from impl.errors import DATABASE_DOWN, ServiceUnavailable


async def get_health() -> Response:
    return success({"status": "ok"})


async def get_readiness() -> Response:
    if hand_over.stopping():  # a load balancer takes this replica out before it closes
        raise ServiceUnavailable("Server is stopping")
    try:
        await runtime.current().database.ping()
    except DATABASE_DOWN:
        raise ServiceUnavailable() from None
    return success({"status": "ok", "database": "ok"})
