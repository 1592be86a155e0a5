"""Off costs nothing: without METRICS_PORT and OTEL_EXPORTER_OTLP_ENDPOINT the app a worker
builds loads nothing of OpenTelemetry's SDK or exporter, its request-context layer has no
observer (no metrics or span code on a request's path: impl/http/middleware.py), and the pool's
connections are the plain class (no statement-span code). With both on, the same layer observes
and the pool's class makes statement spans. In a fresh interpreter each, so that what other
tests imported does not count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = """
import json, sys
from impl.app import create_app
from impl.http.middleware import RequestContextMiddleware
from impl.platform.database import Database, PoolConnection
from tests.support.servers import settings

chosen = settings("postgresql://nobody@127.0.0.1:1/none", **json.loads(sys.argv[1]))
app = create_app(chosen)
layer = app.build_middleware_stack()
while not isinstance(layer, RequestContextMiddleware):
    layer = layer.app
tracer = object() if chosen.otel_exporter_otlp_endpoint else None
print(json.dumps({
    "observer": layer.observer is not None,
    "plain_connections": Database(chosen.database_url, chosen, None, tracer)
        ._connection_class() is PoolConnection,
    "loaded": sorted(name for name in sys.modules
                     if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))),
}))
"""


def built(**overrides: object) -> dict[str, object]:
    answer = subprocess.run([sys.executable, "-c", BUILD, json.dumps(overrides)], cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=True)
    return json.loads(answer.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_off_puts_nothing_on_a_requests_path() -> None:
    off = built()
    assert off == {"observer": False, "plain_connections": True, "loaded": []}


def test_on_the_same_layer_observes() -> None:
    on = built(metrics_port=9, otel_exporter_otlp_endpoint="http://127.0.0.1:9")
    assert on["observer"] is True and on["plain_connections"] is False
    assert "opentelemetry.sdk.trace" in on["loaded"]  # type: ignore[operator]
