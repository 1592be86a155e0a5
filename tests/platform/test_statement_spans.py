"""The statement spans of the pool's traced connection class (impl/platform/traced_connection.py)
on a real PostgreSQL connection, recorded by the OpenTelemetry SDK's in-memory exporter: a child
span per statement under a recorded span, none outside one (and then asyncpg's own awaitable,
not a coroutine of ours), none for BEGIN and COMMIT, and a failing statement's span marked as
an error while the error still reaches the caller."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator

import asyncpg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from impl.platform.traced_connection import traced_connection_class


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
async def connection(database_url: str, provider: TracerProvider
                     ) -> AsyncIterator[asyncpg.Connection]:
    connection_class = traced_connection_class(provider.get_tracer("test"))
    connection = await asyncpg.connect(database_url, connection_class=connection_class)
    try:
        yield connection
    finally:
        await connection.close()


async def test_no_span_outside_a_recorded_one(connection: asyncpg.Connection,
                                              exporter: InMemorySpanExporter) -> None:
    call = connection.fetchval("SELECT 41 + $1::int", 1)
    # asyncpg's own coroutine, handed back as it is: nothing of ours runs around it
    assert inspect.iscoroutine(call)
    assert call.cr_code is asyncpg.Connection.fetchval.__code__
    assert await call == 42
    assert exporter.get_finished_spans() == ()


async def test_a_child_span_per_statement_and_none_for_the_transaction(
        connection: asyncpg.Connection, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    with provider.get_tracer("test").start_as_current_span("request") as request:
        async with connection.transaction():
            assert await connection.fetchval("SELECT 6 * $1::int", 7) == 42
            await connection.execute("SELECT 1")
    spans = exporter.get_finished_spans()
    statements = [span for span in spans if span.name != "request"]
    assert [span.attributes["db.query.text"] for span in statements] == [  # type: ignore[index]
        "SELECT 6 * $1::int", "SELECT 1"]  # no BEGIN, no COMMIT
    for span in statements:
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
        assert span.kind is SpanKind.CLIENT
        assert span.name == "SELECT"
        assert span.attributes["db.system.name"] == "postgresql"  # type: ignore[index]
        assert span.attributes["db.operation.name"] == "SELECT"  # type: ignore[index]
        assert span.attributes["db.namespace"]  # type: ignore[index]
        assert span.attributes["server.address"]  # type: ignore[index]  (a port or a socket)
        assert span.status.status_code is StatusCode.UNSET


async def test_a_failing_statement_is_an_error_span_and_still_fails(
        connection: asyncpg.Connection, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    with (provider.get_tracer("test").start_as_current_span("request"),
          pytest.raises(asyncpg.DivisionByZeroError)):
        await connection.fetchval("SELECT 1 / $1::int", 0)
    (span,) = [span for span in exporter.get_finished_spans() if span.name != "request"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "DivisionByZeroError"  # type: ignore[index]
    assert span.end_time is not None
