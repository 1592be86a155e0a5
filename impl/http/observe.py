"""What operators see of each request: the Prometheus request metrics (by the contract's
operationId and status class, never the raw path), the requests in flight, the refusals the
request met, and, with tracing on, the request's server span, named after the operation.

Not a middleware of its own: the request-context middleware (impl/http/middleware.py), which
already times each request and knows its status for the access line, calls begin() and end()
when metrics or tracing are on (impl/app.py); off, it holds None and a request never gets here.
It writes the access line before end(), while the span is current, so the line carries the
trace id. The operation is known only once the router has matched (it sets `scope["route"]`),
so the span is named and the metrics recorded at the end. What the request was refused for is
noted in its state by the code that refused it (auth: `token_refused`, `refused`; the error
mapping: `refused`), so that code needs no metrics of its own.

The span is made here rather than by OpenTelemetry's ASGI/FastAPI instrumentation: that one
collects some fifteen attributes from the headers and matches the routes again on every
request, sampled or not, which cost more than the request itself (docs/perf/observability.md).
"""

from __future__ import annotations

from random import random
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import Scope

from impl.platform.metrics import Metrics, reason_label, status_class

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


class RequestObserver:
    def __init__(self, metrics: Metrics | None, tracer: trace.Tracer | None,
                 root_ratio: float | None = None) -> None:
        """root_ratio: the share of requests without a caller's trace that start one (the
        rest make no span: impl/platform/tracing.py); None: the tracer's sampler decides."""
        self.metrics = metrics
        self.tracer = tracer
        self.root_ratio = root_ratio

    def begin(self, scope: Scope) -> Any:
        """At the request's start: counts it in flight, starts its span (made current).
        Returns what end() needs (the span and its context token), or None."""
        if self.metrics is not None:
            self.metrics.requests_in_flight += 1
        if self.tracer is None:
            return None
        caller = _caller_context(scope)
        if caller is None and self.root_ratio is not None and random() >= self.root_ratio:
            return None  # not sampled: no span, nothing current, nothing for the SDK to do
        method = scope["method"]
        span = self.tracer.start_span(
            method, context=caller, kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        )
        return span, context.attach(trace.set_span_in_context(span))

    def end(self, begun: Any, scope: Scope, status: int, seconds: float,
            request_id: str) -> None:
        operation = operation_of(scope, status)
        metrics = self.metrics
        if metrics is not None:
            metrics.requests_in_flight -= 1
            metrics.requests.observe(seconds, (operation, status_class(status)))
            if status >= 400:
                _count_refusal(metrics, scope)
        if begun is not None:
            span, token = begun
            _finish(span, scope, operation, status, request_id)
            context.detach(token)


def _count_refusal(metrics: Metrics, scope: Scope) -> None:
    state = scope.get("state")
    if not state:
        return
    reason = state.get("token_refused")
    if reason is not None:
        metrics.tokens_refused.labels(reason_label(reason)).inc()
    refused = state.get("refused")
    if refused is not None:
        metrics.refusals.labels(refused).inc()


def _finish(span: trace.Span, scope: Scope, operation: str, status: int,
            request_id: str) -> None:
    if span.is_recording():
        span.update_name(operation)
        attributes: dict[str, Any] = {"http.response.status_code": status,
                                      "task_api.request_id": request_id}
        route = scope.get("route")
        if operation != UNMATCHED and isinstance(getattr(route, "path", None), str):
            attributes["http.route"] = route.path  # type: ignore[union-attr]
        span.set_attributes(attributes)  # one lock taken, not one per attribute
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    span.end()
