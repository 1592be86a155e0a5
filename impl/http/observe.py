"""What operators see of each request: the Prometheus request metrics (by the contract's
operationId and status class, never the raw path), the requests in flight, the refusals the
request met, and, with tracing on, the request's server span, named after the operation.
Installed only when metrics or tracing are on (impl/app.py): off, a request never crosses it.

The outermost layer: the request-context middleware inside it writes the access line while the
span is current, so the line carries the trace id. The operation is known only once the router
has matched (it sets `scope["route"]`), so the span is named and the metrics recorded when the
app is done. What the request was refused for is noted in its state by the code that refused it
(auth: `token_refused`, `refused`; the error mapping: `refused`), so that code needs no metrics
of its own.

The span is made here rather than by OpenTelemetry's ASGI/FastAPI instrumentation: that one
collects some fifteen attributes from the headers and matches the routes again on every
request, sampled or not, which cost more than the request itself (docs/perf/observability.md).
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from impl.platform.metrics import Metrics, reason_label, status_class
from impl.platform.request_context import current_request_id

UNMATCHED = "unmatched"  # no route: a 404, or answered before routing (405, 413, 415)
_PROPAGATED = (b"traceparent", b"tracestate")  # W3C Trace Context


def operation_of(scope: Scope, status: int) -> str:
    """The contract's operationId of the route that served the request; another route's name
    (the contract's documents, /mcp); `unmatched` when no route did."""
    route = scope.get("route")
    if route is None or status == 405:  # a 405 "matches" another method's route
        return UNMATCHED
    name = getattr(route, "operation_id", None) or getattr(route, "name", None)
    return name if isinstance(name, str) and name else UNMATCHED


def _caller_context(scope: Scope) -> context.Context | None:
    """The caller's trace (its `traceparent`), or None: the request starts a trace."""
    carrier = {
        name.decode(): value.decode("latin-1")
        for name, value in scope["headers"] if name in _PROPAGATED
    }
    return propagate.extract(carrier) if carrier else None


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics | None,
                 tracer: trace.Tracer | None) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer
        # (operation, status class) -> its histogram child: labels() takes a lock and builds
        # a key on every call.
        self._children: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        status = 500
        request_id: str | None = None
        started = time.perf_counter()

        async def watching_send(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = message["status"]
                request_id = current_request_id()  # set by the request-context layer inside
            await send(message)

        span = None
        token = None
        if self.tracer is not None:
            method = scope["method"]
            span = self.tracer.start_span(
                method, context=_caller_context(scope), kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": scope["path"]},
            )
            token = context.attach(trace.set_span_in_context(span))
        if metrics is not None:
            metrics.requests_in_flight += 1
        try:
            await self.app(scope, receive, watching_send)
        finally:
            operation = operation_of(scope, status)
            if metrics is not None:
                metrics.requests_in_flight -= 1
                self._record(metrics, scope, operation, status, time.perf_counter() - started)
            if span is not None and token is not None:
                self._finish(span, scope, operation, status, request_id)
                context.detach(token)

    @staticmethod
    def _finish(span: trace.Span, scope: Scope, operation: str, status: int,
                request_id: str | None) -> None:
        if span.is_recording():
            span.update_name(operation)
            span.set_attribute("http.response.status_code", status)
            route = scope.get("route")
            if operation != UNMATCHED and isinstance(getattr(route, "path", None), str):
                span.set_attribute("http.route", route.path)  # type: ignore[union-attr]
            if request_id is not None:
                span.set_attribute("task_api.request_id", request_id)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.end()

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
