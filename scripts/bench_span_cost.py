"""Where a traced request's CPU goes, stage by stage, in one process: the spans of a request
(the server span, made by impl/http/observe.py's RequestObserver, and its statements' spans, as
impl/platform/traced_connection.py makes them) with no processor, with the batch processor and
an exporter that drops them, that encodes them with OpenTelemetry's encoder, with
impl/platform/otlp_encoding.py, and exporting over OTLP/HTTP to bench/otlp_sink.py (in a process
of its own). Also the observer with metrics only, and a request not drawn at 1 % sampling. CPU
time of this process (the exporter's thread included) over the requests, in microseconds.

    .venv/bin/python scripts/bench_span_cost.py [--requests 20000] [--statements 2]

Nothing is asserted; a hot loop flatters every stage alike (warm caches), so read the stages
against each other, and the server's own figures in scripts/bench_observability.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind

from bench.bench_script import bench_main as load_bench_main
from impl.http.observe import RequestObserver
from impl.platform.metrics import Metrics
from impl.platform.otlp_encoding import encode_span_batch
from impl.platform.tracing import exporter_class

STATEMENT = "SELECT id, title, notes FROM tasks WHERE user_id = $1 AND id = $2"
CONNECTION = {"db.system.name": "postgresql", "db.namespace": "postgres",
              "server.address": "127.0.0.1", "server.port": 5432}


class Dropping(SpanExporter):
    def __init__(self, encode: Callable[[Sequence[ReadableSpan]], Any] | None = None) -> None:
        self.encode = encode

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.encode is not None:
            self.encode(spans)
        return SpanExportResult.SUCCESS


class Route:
    operation_id = "getTask"
    path = "/api/tasks/{id}"


def scope() -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/api/tasks/0190c0de", "route": Route(),
            "headers": [(b"host", b"api"), (b"authorization", b"Bearer " + b"x" * 200)],
            "state": {}}


def run(observer: RequestObserver, requests: int, statements: int,
        provider: TracerProvider | None) -> float:
    tracer = provider.get_tracer("task_api") if provider is not None else None
    request = scope()
    started = time.process_time()
    for _ in range(requests):
        begun = observer.begin(request)
        for _ in range(statements):  # as TracedConnection._start does
            if trace.get_current_span().is_recording() and tracer is not None:
                tracer.start_span("SELECT", kind=SpanKind.CLIENT, attributes={
                    **CONNECTION, "db.query.text": STATEMENT, "db.operation.name": "SELECT"},
                ).end()
        observer.end(begun, request, 200, 0.002, "0190c0de-0000-4000-8000-000000000000")
    if provider is not None:
        provider.force_flush()
    return (time.process_time() - started) / requests * 1e6


def provider_with(exporter: SpanExporter | None) -> TracerProvider:
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    if exporter is not None:
        # A queue that holds a whole run: the figures are of work done, not of spans dropped.
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 20))
    return provider


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--statements", type=int, default=2)
    args = parser.parse_args()
    bench_main = load_bench_main()
    port = bench_main.free_port()
    sink = subprocess.Popen([sys.executable, "-m", "bench.otlp_sink", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    load = round(os.getloadavg()[0], 2)
    print(f"bench_span_cost: {args.requests} requests of 1 server span + {args.statements} "
          f"statement spans; load average {load}")
    rows: list[tuple[str, float]] = []
    try:
        rows.append(("metrics only (no tracing)", run(
            RequestObserver(Metrics(), None), args.requests, args.statements, None)))
        unsampled = provider_with(Dropping())
        rows.append(("tracing, a request not drawn (1 %)", run(
            RequestObserver(None, unsampled.get_tracer("task_api"), 0.0), args.requests,
            args.statements, unsampled)))
        stages: list[tuple[str, SpanExporter | None]] = [
            ("spans made, no processor", None),
            ("+ batch processor, dropped", Dropping()),
            ("+ OpenTelemetry's encoder", Dropping(
                lambda spans: encode_spans(spans).SerializePartialToString())),
            ("+ otlp_encoding.py instead", Dropping(encode_span_batch)),
            ("+ OTLP/HTTP to a sink (as served)",
             exporter_class()(endpoint=f"http://127.0.0.1:{port}/v1/traces")),
        ]
        for label, exporter in stages:
            provider = provider_with(exporter)
            rows.append((label, run(RequestObserver(None, provider.get_tracer("task_api"), 1.0),
                                    args.requests, args.statements, provider)))
            provider.shutdown()
    finally:
        sink.terminate()
        received = sink.communicate(timeout=30)[0].strip()
    for label, micros in rows:
        print(f"  {label:<40} {micros:8.1f} us CPU a request")
    print(f"sink received: {received}; load average {round(os.getloadavg()[0], 2)} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
