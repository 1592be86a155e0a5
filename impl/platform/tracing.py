"""OpenTelemetry traces, when OTEL_EXPORTER_OTLP_ENDPOINT is set: the tracer the request spans are
made with (impl/http/observe.py: one server span per request, named after the contract's
operationId, child of the caller's W3C `traceparent` when there is one) and the statement spans
(impl/platform/traced_connection.py: a child span per SQL statement of a recorded request),
exported over OTLP/HTTP in batches. The SDK reads the standard
variables itself (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS,
OTEL_TRACES_SAMPLER and its _ARG, OTEL_BSP_*...).

Unset, nothing of the SDK is imported or installed: no span, no traced connection, no cost.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.trace import Tracer

log = logging.getLogger("task_api.tracing")
DEFAULT_SERVICE_NAME = "task-api"


@dataclass(frozen=True)
class Tracing:
    tracer: Tracer
    provider: TracerProvider  # shut down (what is buffered exported) when the app stops
    # The share of requests without a caller's trace that start one (OTEL_TRACES_SAMPLER's
    # parent-based samplers), decided by the request observer before any span is made; None:
    # another sampler, which the SDK runs on every request.
    root_ratio: float | None = None


def root_sampling_ratio(environ: Mapping[str, str]) -> float | None:
    """What share of the traces it starts itself OTEL_TRACES_SAMPLER keeps, when that is all it
    decides: the parent-based samplers (the SDK's default, `parentbased_always_on`, among them)
    follow the caller's sampled flag and, for a request without a caller's trace, keep all,
    none, or OTEL_TRACES_SAMPLER_ARG's ratio of them. A trace id ratio kept by the trace id
    (the SDK's way) and by a random draw (the observer's) is the same share: the id of a new
    trace is random. None for anything else (`always_on`, `traceidratio` without a parent...),
    or an argument the SDK would not take as a ratio: the SDK decides, span by span."""
    name = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if name == "parentbased_always_on":
        return 1.0
    if name == "parentbased_always_off":
        return 0.0
    if name != "parentbased_traceidratio":
        return None
    try:
        ratio = float(environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
    except ValueError:
        return None
    return ratio if 0.0 <= ratio <= 1.0 else None


def install_tracing(endpoint: str | None) -> Tracing | None:
    """The tracer; None when off."""
    if not endpoint:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    root_ratio = root_sampling_ratio(os.environ)
    if root_ratio is None:
        provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    else:
        # The observer starts a trace for root_ratio of the requests without a caller's trace
        # and no span at all for the others (nothing made, nothing current: the statements
        # find no span and make none). So every root span it asks for is kept, and a span with
        # a parent follows the parent's flag, as the parent-based samplers do.
        provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
    # The endpoint is the collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT means it;
    # passed explicitly so that a value from .env works too.
    provider.add_span_processor(
        BatchSpanProcessor(exporter_class()(endpoint=endpoint.rstrip("/") + "/v1/traces"))
    )
    log.info("tracing: exporting spans over OTLP/HTTP to %s", endpoint)
    return Tracing(provider.get_tracer("task_api"), provider, root_ratio)


def exporter_class() -> type:
    """OpenTelemetry's OTLP/HTTP exporter (its endpoint, headers, compression, retries,
    certificates from the standard variables), with the batch encoded by
    impl/platform/otlp_encoding.py: its own encoder was most of what a span cost."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    from impl.platform.otlp_encoding import encode_span_batch

    class Exporter(OTLPSpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            # OTLPSpanExporter.export, less its encoder (and its self-metrics, off unless
            # OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED, and the size check: a batch is at most
            # OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans of a few hundred bytes).
            if self._shutdown:
                log.warning("span exporter already shut down: batch dropped")
                return SpanExportResult.FAILURE
            try:
                data = encode_span_batch(spans)
            except Exception:
                log.exception("could not encode a batch of %d spans", len(spans))
                return SpanExportResult.FAILURE
            result = self._client.export(data)
            return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE

    return Exporter
