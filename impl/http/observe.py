"""What operators see of each request: the Prometheus request metrics (by the contract's
operationId and status class, never the raw path), the requests in flight, the refusals the
request met, and its trace span named after the operation. Installed only when metrics or
tracing are on (impl/app.py): off, a request never crosses it.

The operation is known only once the router has matched (it sets `scope["route"]`): the span
is named when the response starts (it ends with the response), the metrics recorded when the
app is done. What the request was refused for is noted in its
state by the code that refused it (auth: `token_refused`, `refused`; the error mapping:
`refused`), so that code needs no metrics of its own.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from impl.platform.metrics import Metrics, reason_label, status_class
from impl.platform.request_context import current_request_id

UNMATCHED = "unmatched"  # no route: a 404, or answered before routing (405, 413, 415)


def operation_of(scope: Scope, status: int) -> str:
    """The contract's operationId of the route that served the request; another route's name
    (the contract's documents, /mcp); `unmatched` when no route did."""
    route = scope.get("route")
    if route is None or status == 405:  # a 405 "matches" another method's route
        return UNMATCHED
    name = getattr(route, "operation_id", None) or getattr(route, "name", None)
    return name if isinstance(name, str) and name else UNMATCHED


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics | None, tracing: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing
        # (operation, status class) -> its histogram child: labels() takes a lock and builds
        # a key on every call.
        self._children: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        status = 500
        started = time.perf_counter()

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.tracing:  # now: the span ends with the response's last body message
                    span = trace.get_current_span()
                    span.update_name(operation_of(scope, status))
                    span.set_attribute("task_api.request_id", current_request_id())
            await send(message)

        if metrics is not None:
            metrics.in_flight.inc()
        try:
            await self.app(scope, receive, watching_send)
        finally:
            if metrics is not None:
                metrics.in_flight.dec()
                self._record(metrics, scope, operation_of(scope, status),
                             status, time.perf_counter() - started)

    def _record(self, metrics: Metrics, scope: Scope, operation: str, status: int,
                seconds: float) -> None:
        key = (operation, status_class(status))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metrics.request_duration.labels(*key)
        child.observe(seconds)
        state = scope.get("state")
        if not state or status < 400:
            return
        reason = state.get("token_refused")
        if reason is not None:
            metrics.tokens_refused.labels(reason_label(reason)).inc()
        refused = state.get("refused")
        if refused is not None:
            metrics.refusals.labels(refused).inc()
