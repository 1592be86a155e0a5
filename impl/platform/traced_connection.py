"""A child span per SQL statement, made by the pool's connection class (tracing on only:
impl/platform/database.py picks this class when it is given a tracer).

Rather than OpenTelemetry's asyncpg instrumentation, which on every statement, sampled or not,
strips comments from the query with a regular expression, builds some ten attributes through
the semantic-conventions helpers and makes the span current (docs/perf/observability.md). Here:
- a statement outside a recorded span (an unsampled request, the background workers' polling)
  costs one look at the current span and nothing else: no span at all;
- the connection's attributes (database, user, server address) are built once per connection,
  the operation name once per distinct statement (they are constants in the code);
- the span is not made current: nothing is ever started inside a statement;
- no span for a transaction's BEGIN, COMMIT or ROLLBACK: each a round trip of nothing to see
  (a failing COMMIT fails its request, whose span says so), and on a write as many spans as
  the statements that do the work.
Attributes follow the stable database semantic conventions (`db.system.name`, `db.namespace`,
`db.query.text`, `db.operation.name`, `server.address`, `server.port`). Parameters are never
recorded (they are users' data).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from impl.platform.database import PoolConnection

_operation_names: dict[str, str] = {}  # statement -> its first word (SELECT, INSERT, WITH...)
_UNTRACED = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "START"})  # a transaction's own


def _operation(query: str) -> str:
    name = _operation_names.get(query)
    if name is None:
        words = query.split(None, 1)
        name = words[0].rstrip(";").upper() if words else "postgresql"
        if len(_operation_names) < 10_000:  # the list statements are built from parts: bounded
            _operation_names[query] = name
    return name


def _statement(asyncpg_method: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """A plain method, not a coroutine: outside a recorded span (the requests not sampled, the
    background workers) it hands back asyncpg's own awaitable, so the statement costs one look
    at the current span and no coroutine of ours around asyncpg's. Callers await either."""

    def method(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        call = asyncpg_method(self, query, *args, **kwargs)
        span = self._start(query)
        return call if span is None else self._traced(span, call)

    method.__name__ = asyncpg_method.__name__
    return method


def traced_connection_class(tracer: trace.Tracer) -> type[PoolConnection]:
    """The pool's connection class, making its statement spans with `tracer`."""

    class TracedConnection(PoolConnection):
        _span_attributes: dict[str, Any] | None = None

        def _connection_attributes(self) -> dict[str, Any]:
            attributes: dict[str, Any] = {"db.system.name": "postgresql"}
            params = getattr(self, "_params", None)
            if getattr(params, "database", None):
                attributes["db.namespace"] = params.database  # type: ignore[union-attr]
            address = getattr(self, "_addr", None)
            if isinstance(address, tuple):
                attributes["server.address"], attributes["server.port"] = address[0], address[1]
            elif isinstance(address, str):
                attributes["server.address"] = address  # a Unix socket
            self._span_attributes = attributes
            return attributes

        def _start(self, query: str) -> trace.Span | None:
            if not trace.get_current_span().is_recording():
                return None
            operation = _operation(query)
            if operation in _UNTRACED:
                return None
            base = self._span_attributes or self._connection_attributes()
            return tracer.start_span(operation, kind=SpanKind.CLIENT, attributes={
                **base, "db.query.text": query, "db.operation.name": operation})

        async def _traced(self, span: trace.Span, call: Awaitable[Any]) -> Any:
            try:
                return await call
            except Exception as error:
                span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
                span.set_attribute("error.type", type(error).__qualname__)
                raise
            finally:
                span.end()

        # asyncpg's statement methods, each replaced by a plain method (_statement)
        execute = _statement(PoolConnection.execute)
        executemany = _statement(PoolConnection.executemany)
        fetch = _statement(PoolConnection.fetch)
        fetchrow = _statement(PoolConnection.fetchrow)
        fetchval = _statement(PoolConnection.fetchval)

    return TracedConnection
