"""A stand-in OTLP/HTTP collector for the benchmark: accepts every POST to /v1/traces, counts
the spans in it (decoded with opentelemetry-proto, as a collector would) and keeps nothing.

    .venv/bin/python -m bench.otlp_sink PORT

Runs in a process of its own, so its work is not the API's; on SIGTERM it prints what it
received (requests, spans) as one JSON line."""

from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

received = {"requests": 0, "spans": 0}
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        spans = sum(len(scope.spans) for resource in
                    ExportTraceServiceRequest.FromString(body).resource_spans
                    for scope in resource.scope_spans)
        with lock:
            received["requests"] += 1
            received["spans"] += spans
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()
    print(json.dumps(received), flush=True)


if __name__ == "__main__":
    main()
