"""The request id of the request being served, set by the middleware, read by logs and envelopes."""

from __future__ import annotations

import uuid
from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str:
    request_id = _request_id.get()
    if request_id is None:  # outside a request (CLI, tests): still a valid UUID
        request_id = str(uuid.uuid4())
    return request_id


def set_request_id(request_id: str) -> object:
    return _request_id.set(request_id)


def reset_request_id(token: object) -> None:
    _request_id.reset(token)  # type: ignore[arg-type]
