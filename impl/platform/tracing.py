"""OpenTelemetry traces, when OTEL_EXPORTER_OTLP_ENDPOINT is set: the tracer the request spans are
made with (impl/http/observe.py: one server span per request, named after the contract's
operationId, child of the caller's W3C `traceparent` when there is one) and asyncpg instrumented
(a child span per SQL statement), exported over OTLP/HTTP in batches. The SDK reads the standard
variables itself (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS,
OTEL_TRACES_SAMPLER and its _ARG, OTEL_BSP_*...).

Unset, nothing is imported or installed: no span, no patched driver, no cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

log = logging.getLogger("task_api.tracing")
DEFAULT_SERVICE_NAME = "task-api"


@dataclass(frozen=True)
class Tracing:
    tracer: Tracer
    provider: TracerProvider  # shut down (what is buffered exported) when the app stops


def install_tracing(endpoint: str | None) -> Tracing | None:
    """The tracer, with asyncpg instrumented (process-wide); None when off."""
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    # The endpoint is the collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT means it;
    # passed explicitly so that a value from .env works too.
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"))
    )
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
    log.info("tracing: exporting spans over OTLP/HTTP to %s", endpoint)
    return Tracing(provider.get_tracer("task_api"), provider)
