"""Slow clients cannot take the server down: a deadline for receiving each request, and a bound
on open connections that the slowest give way to.

Stock uvicorn has neither. A connection that sends a request line and then one header every few
seconds (or nothing at all) is held for ever, each holding a file descriptor: 21,000 of them
from one host held every descriptor of a server (its limit 20,000) and every normal request
failed until they let go. `limit_concurrency` does not help: it answers 503 to requests, but
only once their heads have arrived, and the connections stay.

So, in uvicorn's own HTTP protocol (httptools), per connection:
- the request's head (request line and headers) must be complete within `head_timeout` of the
  connection being ready for it: opened, or the previous response sent (an idle keep-alive
  connection is closed earlier still, by uvicorn's `timeout_keep_alive`);
- its body must be complete within `body_timeout` of the head.
A connection past its deadline is closed, with a 408 envelope when it had sent part of a
request. The deadlines end when the request has been received: a response, however long (the
live stream of GET /api/tasks/events), is never cut by them.

And per server: at most `max_connections` open (kept below the process's descriptor limit, see
`fit_to_descriptors`, so accept() never fails for want of one). A connection over the bound
closes the connection that has been waiting longest for a request head: the slowest client or
the oldest idle keep-alive, never one whose request is being served. A normal request completes
its head within milliseconds of connecting, so however many slow connections keep coming, it is
not the one chosen. Only when every connection is serving a request is the newcomer refused
(503, `Retry-After`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import uuid
import weakref
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("task_api.slow_clients")

# Descriptors kept free of connections: the listener, the database pool and its listener,
# logs, the embedded PostgreSQL's pipes, files the app opens.
RESERVED_DESCRIPTORS = 1024
# After a reply of its own (408, 503) the server stops sending, reads and drops what still comes
# for this long, then closes: closing with unread bytes from the client (the rest of its
# request) makes the kernel send a reset, and a reset can destroy the reply before the client
# has read it.
LINGER_SECONDS = 1.0


@dataclass(frozen=True)
class RequestLimits:
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 10_000


def fit_to_descriptors(limits: RequestLimits) -> RequestLimits:
    """Raises this process's soft descriptor limit as far as the hard one allows (its workers
    inherit it), and lowers the connection bound to what then fits, with a warning: over the
    limit, accept() fails and the listener stops for a second at a time (asyncio), which is
    what let slow clients shut everyone out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        fitted = max(1, soft - RESERVED_DESCRIPTORS)
        log.warning("MAX_CONNECTIONS=%d does not fit in %d file descriptors (ulimit -n): at "
                    "most %d connections", limits.max_connections, soft, fitted)
        return replace(limits, max_connections=fitted)
    return limits


class LimitedConfig(uvicorn.Config):
    """uvicorn's Config with RequestLimits, served by LimitedHttpProtocol. A module-level class:
    with --workers, the config is pickled into each worker by name."""

    def __init__(self, app: Any, *, limits: RequestLimits, **kwargs: Any) -> None:
        super().__init__(app, http=LimitedHttpProtocol, **kwargs)
        self.limits = limits


# Per server (its uvicorn ServerState): connections waiting for a request head, oldest first
# (a dict keeps insertion order, so the oldest is found and removed in constant time).
_waiting: weakref.WeakKeyDictionary[ServerState, dict[LimitedHttpProtocol, None]] = (
    weakref.WeakKeyDictionary())


class LimitedHttpProtocol(HttpToolsProtocol):
    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: RequestLimits = getattr(config, "limits", RequestLimits())
        self.waiting = _waiting.setdefault(server_state, {})
        self.deadline: asyncio.TimerHandle | None = None
        self.request_begun = False  # a byte of the request awaited has arrived
        self.replied = False  # a reply of our own was sent: what comes now is dropped
        self.body_pending = False  # the head is in, the body is not yet

    # -- the connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def data_received(self, data: bytes) -> None:
        if self.replied:
            return
        super().data_received(data)
        # Armed here rather than with the head: most requests (every GET) end in the same
        # read as their head, and then need no timer at all.
        if self.body_pending and self.deadline is None and not self.transport.is_closing():
            self.deadline = self.loop.call_later(self.limits.body_timeout, self._give_up,
                                                 "request body deadline")

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _make_room(self) -> None:
        oldest = next(iter(self.waiting))
        if oldest is self:  # every other connection is serving a request
            log.warning("%d connections open, all serving requests: refusing one (503)",
                        len(self.connections) - 1)
            self._reply(503, "SERVICE_UNAVAILABLE",
                        "The server is at its connection limit: retry shortly",
                        b"retry-after: 1\r\n")
            return
        oldest._give_up("evicted: the connection limit was reached")

    # -- deadlines ---------------------------------------------------------------------------

    def _await_head(self) -> None:
        self._stop_waiting()
        self.request_begun = False
        self.waiting[self] = None
        self.deadline = self.loop.call_later(self.limits.head_timeout, self._give_up,
                                             "request head deadline")

    def _stop_waiting(self) -> None:
        self.waiting.pop(self, None)
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.request_begun = True

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._stop_waiting()
        self.body_pending = not self.parser.should_upgrade()

    def on_message_complete(self) -> None:
        self.body_pending = False
        self._stop_waiting()  # the body deadline: the request is in
        super().on_message_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._await_head()

    def _give_up(self, why: str) -> None:
        """Closes this connection, which is still receiving its request: with a 408 envelope
        when part of one came and no response has begun, else silently."""
        self._stop_waiting()
        if self.transport.is_closing():
            return
        log.debug("closing %s: %s", self.client, why)
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete
        if answering and cycle.response_started:
            self.transport.close()
        elif self.request_begun or answering:
            self._reply(408, "REQUEST_TIMEOUT",
                        "The request was not received in time: send it again, faster")
        else:
            self.transport.close()
        if answering:
            # The app reading the body sees the client gone; what it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()

    def _reply(self, status: int, code: str, message: str, extra: bytes = b"") -> None:
        """A complete response written before (or instead of) the app, then the close. The
        error envelope of the API (impl/http/envelope.py), built here: the platform layer
        cannot reach the http layer, and the app is not running for this connection."""
        request_id = str(uuid.uuid4())
        body = json.dumps({
            "error": {"code": code, "message": message},
            "meta": {"timestamp": datetime.now(UTC).isoformat(), "request_id": request_id},
        }).encode()
        self.transport.write(b"".join([
            STATUS_LINE[status], b"content-type: application/json\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\n",
            b"x-request-id: ", request_id.encode(), b"\r\n", extra,
            b"connection: close\r\n\r\n", body,
        ]))
        self.replied = True
        self._stop_waiting()
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
