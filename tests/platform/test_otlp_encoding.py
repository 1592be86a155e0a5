"""impl/platform/otlp_encoding.py writes the same ExportTraceServiceRequest as the OTLP exporter's
own encoder: real SDK spans (a server span from a remote parent with a trace state, an error,
client spans of every attribute type, two resources and scopes) encoded both ways, decoded with
opentelemetry-proto and compared field by field; a batch with events falls back to the
exporter's encoder."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceFlags, TraceState

from impl.platform.otlp_encoding import encode_span_batch


class Keeping(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: object) -> SpanExportResult:
        self.spans.extend(spans)  # type: ignore[arg-type]
        return SpanExportResult.SUCCESS


def provider(kept: Keeping, service: str) -> TracerProvider:
    made = TracerProvider(resource=Resource.create({"service.name": service, "replica": 2}))
    made.add_span_processor(SimpleSpanProcessor(kept))
    return made


def decoded(data: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(data)


def some_spans(kept: Keeping) -> None:
    api = provider(kept, "task-api").get_tracer("task_api", "1.0")
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "x1")]))
    server = api.start_span("createTask", context=trace.set_span_in_context(
        NonRecordingSpan(remote)), kind=SpanKind.SERVER, attributes={
        "http.request.method": "POST", "http.response.status_code": 201, "ratio": 0.25,
        "flag": True, "negative": -7, "tags": ["a", "b"], "counts": [1, 2], "raw": b"\x00\xff",
        "text": "naïve ✓"})
    inside = trace.set_span_in_context(server)
    for query in ("SELECT 1", "INSERT INTO tasks VALUES ($1)"):
        statement = api.start_span(query.split()[0], context=inside, kind=SpanKind.CLIENT,
                                   attributes={"db.system.name": "postgresql",
                                               "db.query.text": query, "server.port": 5432})
        statement.end()
    failing = api.start_span("broken", context=inside)
    failing.set_status(Status(StatusCode.ERROR, "it broke"))
    failing.end()
    server.end()
    root = provider(kept, "other").get_tracer("elsewhere").start_span("root")
    root.end()


def test_the_same_request_as_the_exporters_encoder() -> None:
    kept = Keeping()
    some_spans(kept)
    assert len(kept.spans) == 5
    ours, theirs = decoded(encode_span_batch(kept.spans)), encode_spans(kept.spans)
    assert ours == theirs, f"{ours}\n---\n{theirs}"
    assert len(ours.resource_spans) == 2
    first = ours.resource_spans[0].scope_spans[0].spans
    assert first[-1].name == "createTask" and first[-1].flags == 0x300  # its parent was remote


def test_a_batch_with_events_uses_the_exporters_encoder() -> None:
    kept = Keeping()
    span = provider(kept, "task-api").get_tracer("task_api").start_span("with event")
    span.add_event("happened", {"n": 1})
    span.end()
    assert decoded(encode_span_batch(kept.spans)) == encode_spans(kept.spans)
