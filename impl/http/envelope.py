"""The `{data, meta}` / `{error, meta}` envelopes, serialized with orjson."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response

from impl.platform.request_context import current_request_id


def meta(**extra: Any) -> dict[str, Any]:
    return {"timestamp": datetime.now(UTC), "request_id": current_request_id(), **extra}


def _fallback(value: Any) -> str:
    # asyncpg returns its own UUID class, which orjson does not know; it prints as a UUID.
    return str(value)


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, default=_fallback)


def json_response(
    content: Mapping[str, Any], status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    # orjson writes datetimes as RFC 3339 with offset and UUIDs as strings, much faster than
    # the stdlib encoder.
    return Response(dumps(content), status_code, headers, media_type="application/json")


def success(
    data: Any, status_code: int = 200, headers: Mapping[str, str] | None = None, **meta_extra: Any
) -> Response:
    return json_response({"data": data, "meta": meta(**meta_extra)}, status_code, headers)


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return dumps({"error": error, "meta": meta()})
