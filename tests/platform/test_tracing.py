"""Traces of a real `task-api serve` with OTEL_EXPORTER_OTLP_ENDPOINT pointing at an OTLP/HTTP
receiver in the test (tests/support/otlp_receiver.py, decoding with opentelemetry-proto): a
create sent with a W3C traceparent is a server span named createTask in the caller's trace, child
of the caller's span, with its SQL statements as descendants; a list without one starts a trace
of its own, listTasks, with its SELECTs below it; the access log line carries the trace id next
to the request id. Without the variable, no span and no trace id (the other tests' servers)."""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path

import httpx

from impl.platform.token_verifier import mint_hs256
from tests.support.otlp_receiver import Span, otlp_receiver
from tests.support.servers import SECRET, server_environment, task_api_serve

SERVER = 2  # SpanKind.SERVER in the protocol's numbering


def descendants(spans: list[Span], root: Span) -> list[Span]:
    children: dict[str, list[Span]] = {}
    for span in spans:
        children.setdefault(span.parent_span_id, []).append(span)
    found, todo = [], [root]
    while todo:
        span = todo.pop()
        for child in children.get(span.span_id, []):
            if child.trace_id == root.trace_id:
                found.append(child)
                todo.append(child)
    return found


def statements(spans: list[Span]) -> list[str]:
    return [str(span.attributes.get("db.statement") or span.attributes.get("db.query.text"))
            for span in spans if span.attributes.get("db.system") == "postgresql"
            or span.attributes.get("db.system.name") == "postgresql"]


def named(spans: list[Span], name: str, trace_id: str | None = None) -> list[Span]:
    return [s for s in spans if s.name == name and trace_id in (None, s.trace_id)]


def test_a_span_per_request_named_by_operation_with_its_sql_below(
    database_url: str, tmp_path: Path
) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    bearer = {"Authorization": f"Bearer {mint_hs256(SECRET, str(uuid.uuid4()))}"}
    log_path = tmp_path / "server.log"
    with otlp_receiver() as receiver:
        env = {
            **server_environment(database_url),
            "BETTER_AUTH_SECRET": SECRET,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # milliseconds between batches
            "LOG_LEVEL": "INFO",
        }
        with task_api_serve(env, log_path) as (base_url, _process), \
                httpx.Client(base_url=base_url, timeout=30) as http:
            created = http.post("/api/tasks", json={"title": "traced"}, headers={
                **bearer, "traceparent": f"00-{trace_id}-{parent_id}-01"})
            assert created.status_code == 201, created.text
            listed = http.get("/api/tasks", headers=bearer)
            assert listed.status_code == 200

            def complete(spans: list[Span]) -> bool:
                create, listing = named(spans, "createTask", trace_id), named(spans, "listTasks")
                return (len(create) == 1 and len(listing) == 1
                        and len(statements(descendants(spans, create[0]))) >= 1
                        and len(statements(descendants(spans, listing[0]))) >= 1)

            spans = receiver.wait_for(complete)

    (create,) = named(spans, "createTask", trace_id)
    assert create.parent_span_id == parent_id  # the caller's traceparent honoured
    assert create.kind == SERVER
    assert create.service == "task-api"
    assert create.attributes["task_api.request_id"] == created.headers["x-request-id"]
    assert create.attributes["http.route"] == "/api/tasks"  # the template, not the raw path
    assert create.attributes["http.response.status_code"] == 201
    assert any("INSERT" in sql.upper() for sql in statements(descendants(spans, create)))

    (listing,) = named(spans, "listTasks")
    assert listing.trace_id != trace_id and listing.parent_span_id == ""  # a trace of its own
    assert listing.attributes["task_api.request_id"] == listed.headers["x-request-id"]
    assert any("SELECT" in sql.upper() for sql in statements(descendants(spans, listing)))
    # One span per request: no per-send or per-receive spans, nothing named after a raw path.
    assert not [s for s in spans if s.trace_id in (trace_id, listing.trace_id)
                and "/api/" in s.name]

    lines = [json.loads(line) for line in log_path.read_text().splitlines()
             if line.startswith("{")]
    access = {line["request_id"]: line for line in lines if line["logger"] == "task_api.access"}
    assert access[created.headers["x-request-id"]]["trace_id"] == trace_id
    assert access[listed.headers["x-request-id"]]["trace_id"] == listing.trace_id
