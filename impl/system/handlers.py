"""Handlers for the `system` tag: liveness and readiness."""

from __future__ import annotations

from starlette.responses import Response

from impl import runtime
from impl.http.envelope import success
from impl.http.errors import DATABASE_DOWN, ServiceUnavailable


async def get_health() -> Response:
    return success({"status": "ok"})


async def get_readiness() -> Response:
    try:
        await runtime.current().database.ping()
    except DATABASE_DOWN:
        raise ServiceUnavailable() from None
    return success({"status": "ok", "database": "ok"})
