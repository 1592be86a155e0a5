"""OpenTelemetry traces, when OTEL_EXPORTER_OTLP_ENDPOINT is set: a span per request (renamed to
the contract's operationId by impl/http/observe.py) with a child per SQL statement, exported
over OTLP/HTTP in batches. The SDK reads the standard variables itself (OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, OTEL_BSP_*...); an
incoming W3C `traceparent` makes the request's span a child of the caller's.

Unset, nothing is imported or installed: no middleware, no patched driver, no cost.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import FastAPI

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("task_api.tracing")
DEFAULT_SERVICE_NAME = "task-api"


def install_tracing(app: FastAPI, endpoint: str | None) -> TracerProvider | None:
    """Instruments `app` (its requests) and asyncpg (its statements, process-wide) and returns
    the provider to shut down (flushing what is buffered) when the app stops; None when off."""
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    # The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and .../TRACES_ENDPOINT, headers,
    # timeout) and appends /v1/traces: the endpoint is the collector's base URL. Passed
    # explicitly only so that a value from .env works too.
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"))
    )
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
    # Its ASGI middleware goes outside every other layer, so the access log line (written by
    # the outermost of ours) is inside the span and carries its trace id. No spans for each
    # ASGI send and receive: one span per request, the statements its children.
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider,
                                       exclude_spans=["receive", "send"])
    log.info("tracing: exporting spans over OTLP/HTTP to %s", endpoint)
    return provider
