"""Pure-ASGI middleware: a fresh request id per request (header, envelope, logs), one
structured access-log line, the request's metrics and span when they are on (impl/http/observe.py:
this layer already times the request and knows its status, so they need no layer of their
own), and the last-resort error envelope for anything that escapes the app."""

from __future__ import annotations

import logging
import random
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from impl.http.errors import unexpected_error_response
from impl.http.observe import RequestObserver
from impl.platform.request_context import reset_request_id, set_request_id

access_log = logging.getLogger("task_api.access")
_VERSION_4 = 0x4000 << 64  # the version nibble of a UUID's 128 bits
_VARIANT = 0x8000 << 48  # and its variant bits (RFC 9562)
_VERSION_MASK = ~(0xF000 << 64) & ~(0xC000 << 48)


def new_request_id() -> str:
    """A random version-4 UUID in its text form, like str(uuid.uuid4()) at a third of the cost
    (no UUID object; Python's generator, not the OS's: a request id correlates logs, it guards
    nothing)."""
    bits = f"{random.getrandbits(128) & _VERSION_MASK | _VERSION_4 | _VARIANT:032x}"
    return f"{bits[:8]}-{bits[8:12]}-{bits[12:16]}-{bits[16:20]}-{bits[20:]}"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, observer: RequestObserver | None = None) -> None:
        self.app = app
        self.observer = observer  # None: metrics and tracing off

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        header = (b"x-request-id", request_id.encode())
        token = set_request_id(request_id)
        state = scope.setdefault("state", {})
        observer = self.observer
        begun = observer.begin(scope) if observer is not None else None
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), header]
                rate_limit = state.get("rate_limit")  # a Decision, set by auth for a caller
                if rate_limit is not None:
                    headers.extend(rate_limit.raw_headers)
                message["headers"] = headers
            await send(message)

        try:
            # The backstop for the few layers outside LastResortMiddleware (CORSMiddleware).
            await answer_failures(self.app, scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            if access_log.isEnabledFor(logging.INFO):  # not even the record's fields otherwise
                access_log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                        "user_id": state.get("user_id"),
                    },
                )
            if observer is not None:  # after the line: the span is current while it is written
                observer.end(begun, scope, status, seconds, request_id)
            reset_request_id(token)



async def answer_failures(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Runs `app`; an exception no handler took before a response started becomes the 500 (or
    503) envelope, sent through `send`."""
    response_started = False

    async def watching_send(message: Message) -> None:
        nonlocal response_started
        if message["type"] == "http.response.start":
            response_started = True
        await send(message)

    try:
        await app(scope, receive, watching_send)
    except Exception as exc:
        if response_started:
            raise
        response = unexpected_error_response(exc, scope["method"], scope["path"])
        await response(scope, receive, send)


class LastResortMiddleware:
    """The failure envelope (answer_failures) answered inside CORSMiddleware, so a page on an
    allowed origin can read it and its request id: the request-context middleware, outermost,
    would answer without the CORS headers. It keeps the same answer as a backstop for the few
    layers outside this one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await answer_failures(self.app, scope, receive, send)
