"""The server side of a clean hand-over behind a load balancer (ASGI, outermost).

Once the server starts stopping (impl/platform/serving.py calls `begin()` on SIGTERM), while its listener
is still open:

- `/api/ready` answers 503 (the readiness handler asks `stopping()`), so the load balancer's
  health check takes this replica out of rotation;
- every response says `Connection: close`, so a keep-alive connection is closed right after the
  response it carries, between requests, never under a request the balancer is sending;
- requests still sent here are served as usual.

It also remembers when the last request other than a probe arrived: the serving loop keeps the
listener open until that has been quiet for a while (evidence that the balancer stopped sending).
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBES = frozenset({"/api/health", "/api/ready"})
# The server's "closing" event, for the request being served: set when the server starts
# stopping, so long-lived responses (event streams) end by themselves instead of holding the
# shutdown up. None when the app runs without this wrapper (tests' plain uvicorn).
_closing: ContextVar[asyncio.Event | None] = ContextVar("closing", default=None)
_stopping: ContextVar[bool] = ContextVar("stopping", default=False)


def server_closing() -> asyncio.Event | None:
    """The event set when the server serving the current request starts stopping."""
    return _closing.get()


def stopping() -> bool:
    """True while the current request is served by a server that is stopping."""
    return _stopping.get()


class HandOver:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.stopping_since: float | None = None
        self.last_request = float("-inf")  # time.monotonic() of the last non-probe request
        self.closing = asyncio.Event()

    def begin(self) -> None:
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
        self.close_streams()

    def close_streams(self) -> None:
        """Tell long-lived responses to end (they send their clients a retry hint)."""
        self.closing.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        _closing.set(self.closing)  # this request's context only (each has its own)
        if scope["path"] not in PROBES:
            self.last_request = time.monotonic()
        if self.stopping_since is None:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        token = _stopping.set(True)
        try:
            await self.app(scope, receive, send_closing)
        finally:
            _stopping.reset(token)
