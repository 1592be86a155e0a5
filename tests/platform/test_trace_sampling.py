"""Sampling before any span is made (impl/platform/tracing.py, impl/http/observe.py): the
parent-based samplers' share of new traces is read from OTEL_TRACES_SAMPLER as the SDK reads
it, and the request observer draws it itself. A request not drawn makes no span and leaves
nothing current (its statements find no span); a request with a caller's sampled traceparent
is traced whatever the ratio (the parent decides), one with an unsampled traceparent is not
recorded; with the ratio at 1 every request is. Real SDK spans, kept in memory."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

from impl.http.observe import RequestObserver
from impl.platform.tracing import root_sampling_ratio

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize(("environ", "ratio"), [
    ({}, 1.0),
    ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, 1.0),
    ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, 0.0),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
     0.01),
    ({"OTEL_TRACES_SAMPLER": "PARENTBASED_TRACEIDRATIO"}, 1.0),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"}, None),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, None),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}, None),
    ({"OTEL_TRACES_SAMPLER": "always_on"}, None),
])
def test_the_share_of_new_traces(environ: dict[str, str], ratio: float | None) -> None:
    assert root_sampling_ratio(environ) == ratio


def request(traceparent: str | None = None) -> dict[str, Any]:
    headers = [(b"host", b"api")]
    if traceparent:
        headers.append((b"traceparent", traceparent.encode()))
    return {"type": "http", "method": "GET", "path": "/api/tasks", "headers": headers,
            "state": {}}


def observed(ratio: float, scope: dict[str, Any]) -> tuple[list[Any], bool]:
    """The spans one request made, and whether a recording span was current inside it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = RequestObserver(None, provider.get_tracer("test"), ratio)
    begun = observer.begin(scope)
    recording_inside = trace.get_current_span().is_recording()
    observer.end(begun, scope, 200, 0.001, "request-id")
    assert not trace.get_current_span().get_span_context().is_valid  # nothing left current
    return list(exporter.get_finished_spans()), recording_inside


def test_a_request_not_drawn_makes_no_span() -> None:
    assert observed(0.0, request()) == ([], False)


def test_every_request_at_ratio_one() -> None:
    spans, inside = observed(1.0, request())
    assert len(spans) == 1 and inside and spans[0].parent is None


def test_the_callers_flag_decides_whatever_the_ratio() -> None:
    spans, inside = observed(0.0, request(f"00-{CALLER_TRACE}-b7ad6b7169203331-01"))
    assert len(spans) == 1 and inside
    assert format(spans[0].context.trace_id, "032x") == CALLER_TRACE
    assert observed(1.0, request(f"00-{CALLER_TRACE}-b7ad6b7169203331-00")) == ([], False)
