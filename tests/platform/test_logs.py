"""Structured logs of a real `task-api serve` writing to a file (no terminal, no LOG_FORMAT: the
automatic choice is JSON): every line of its output is a JSON object without colour codes, every
request leaves exactly one access line (request_id, method, path, status, duration_ms, user_id),
and no token, secret or password ever reaches the logs, whatever the requests carry.

The server runs with a DATABASE_URL that holds a password (the test PostgreSQL trusts local
connections, so a made-up one still connects), a distinctive BETTER_AUTH_SECRET, and
LOG_LEVEL=INFO. It is sent valid, garbage, expired and foreign-signed tokens, tokens in query
strings, bodies and cookies, Basic credentials, 404s, 405s and 422s.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from impl.platform.database import connect_options
from impl.platform.token_verifier import mint_hs256
from tests.support.reporting import show
from tests.support.servers import TASK_API, free_port

SERVER_SECRET = f"logs-test-SECRET-{uuid.uuid4().hex}"
OTHER_SECRET = f"not-the-server-secret-{uuid.uuid4().hex}"
FAKE_DB_PASSWORD = f"s3cr3t-PASSWORD-{uuid.uuid4().hex[:12]}"


def with_password(database_url: str) -> tuple[str, str]:
    """The URL with a password in it (made up when it has none), and that password."""
    parts = urlsplit(database_url)
    if parts.password:
        return database_url, parts.password
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or 'postgres'}:{FAKE_DB_PASSWORD}@{host}"
    return urlunsplit(parts._replace(netloc=netloc)), FAKE_DB_PASSWORD


@dataclass
class Sent:
    what: str
    method: str
    path: str
    status: int
    request_id: str
    user_id: str | None  # what the access line must say


async def test_one_json_access_line_per_request_and_no_secret_in_the_logs(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url, db_password = with_password(database_url)
    probe = await asyncpg.connect(connect_options(url).dsn)  # the password does not get in the way
    await probe.close()

    alice, bob = uuid.uuid4(), uuid.uuid4()
    token = mint_hs256(SERVER_SECRET, alice)
    bob_token = mint_hs256(SERVER_SECRET, bob)
    expired = mint_hs256(SERVER_SECRET, alice, -3600)
    foreign = mint_hs256(OTHER_SECRET, alice)
    garbage = f"garbage-token-{uuid.uuid4().hex}"
    basic_password = f"basic-PASSWORD-{uuid.uuid4().hex[:12]}"
    basic = base64.b64encode(f"alice:{basic_password}".encode()).decode()
    cookie = f"session-COOKIE-{uuid.uuid4().hex}"
    body_password = f"body-PASSWORD-{uuid.uuid4().hex[:12]}"
    bearer = {"Authorization": f"Bearer {token}"}

    port = free_port()
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env = {**keep, "DATABASE_URL": url, "BETTER_AUTH_SECRET": SERVER_SECRET, "LOG_LEVEL": "INFO"}
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = await asyncio.create_subprocess_exec(
            TASK_API, "serve", "--port", str(port), env=env, cwd=tmp_path,
            stdout=log, stderr=subprocess.STDOUT,
        )
    sent: list[Sent] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def send(what: str, method: str, path: str, status: int,
                           user: uuid.UUID | None, **kwargs: Any) -> httpx.Response:
                response = await http.request(method, path, **kwargs)
                sent.append(Sent(what, method, path.split("?")[0], response.status_code,
                                 response.headers["x-request-id"], str(user) if user else None))
                assert response.status_code == status, (what, response.text)
                return response

            deadline = time.monotonic() + 60
            while True:  # readiness polls are requests too: each must leave its line
                assert server.returncode is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "server did not become ready"
                try:
                    ready = await http.get("/api/ready")
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
                    continue
                sent.append(Sent("ready", "GET", "/api/ready", ready.status_code,
                                 ready.headers["x-request-id"], None))
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.1)

            await send("health", "GET", "/api/health", 200, None)
            await send("list", "GET", "/api/tasks", 200, alice, headers=bearer)
            created = await send("create", "POST", "/api/tasks", 201, alice, headers=bearer,
                                 json={"title": "logged", "description": "nothing secret"})
            task = f"/api/tasks/{created.json()['data']['id']}"
            await send("get", "GET", task, 200, alice, headers=bearer)
            await send("patch", "PATCH", task, 200, alice, headers=bearer,
                       json={"completed": True})
            await send("missing task", "GET", f"/api/tasks/{uuid.uuid4()}", 404, alice,
                       headers=bearer)
            await send("other user's task", "GET", task, 403, bob,
                       headers={"Authorization": f"Bearer {bob_token}"})
            await send("garbage token", "GET", "/api/tasks", 401, None,
                       headers={"Authorization": f"Bearer {garbage}"})
            await send("expired token", "GET", "/api/tasks", 401, None,
                       headers={"Authorization": f"Bearer {expired}"})
            await send("foreign-signed token", "GET", "/api/tasks", 401, None,
                       headers={"Authorization": f"Bearer {foreign}"})
            await send("token in query only", "GET", f"/api/tasks?token={bob_token}", 401, None)
            await send("token in query and header", "GET",
                       f"/api/tasks?token={bob_token}&access_token={token}", 200, alice,
                       headers=bearer)
            await send("basic credentials", "GET", "/api/tasks", 401, None,
                       headers={"Authorization": f"Basic {basic}"})
            await send("session cookie", "GET", "/api/tasks", 200, alice,
                       headers={**bearer, "Cookie": f"better-auth.session_token={cookie}"})
            await send("token echoed in a 422 body", "POST", "/api/tasks", 422, alice,
                       headers=bearer,
                       json={"title": "", "token": token, "password": body_password})
            await send("token as a wrong-typed value", "PATCH", task, 422, alice,
                       headers=bearer, json={"completed": token})
            await send("unknown route", "GET", f"/api/nope?token={token}", 404, None,
                       headers=bearer)
            await send("method not allowed", "POST", "/api/health", 405, None, headers=bearer)
            await send("delete", "DELETE", task, 204, alice, headers=bearer)
        server.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(server.wait(), 30)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    text = log_path.read_text()
    assert exit_code == 0, text[-3000:]

    # Every line of output is one JSON object, with no terminal colour codes in it (uvicorn
    # adds a `color_message` field to its records: dropped).
    assert "\x1b" not in text and "\\u001b" not in text, "ANSI colour codes in the JSON logs"
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"log line {number} is not JSON: {line!r}") from None
        assert isinstance(entry, dict) and {"time", "level", "logger", "message"} <= set(entry), line
        assert "color_message" not in entry, line
        entries.append(entry)
    assert any(e["message"].startswith("Uvicorn running on") for e in entries)

    # Exactly one access line per request, saying what happened and for whom.
    access = [e for e in entries if e["logger"] == "task_api.access"]
    assert len(access) == len(sent), (
        f"{len(access)} access lines for {len(sent)} requests:\n"
        + "\n".join(json.dumps(e) for e in access)
    )
    by_id = {e.get("request_id"): e for e in access}
    assert len(by_id) == len(access), "two access lines share a request id"
    for made in sent:
        line = by_id.get(made.request_id)
        assert line is not None, f"no access line with X-Request-ID of {made}"
        assert (line["method"], line["path"], line["status"], line["user_id"]) == (
            made.method, made.path, made.status, made.user_id
        ), (made, line)
        assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0, line

    # One WARN line per refused token, with the request id and the reason (never the token).
    refused = {"garbage token": "Invalid token: malformed", "expired token": "Token expired",
               "foreign-signed token": "Invalid token: bad signature"}
    warnings = [e for e in entries if e["logger"] == "task_api.auth" and e["level"] == "WARNING"]
    assert sorted((e["request_id"], e["reason"]) for e in warnings) == sorted(
        (made.request_id, refused[made.what]) for made in sent if made.what in refused
    ), warnings
    assert all(e["message"] == "token refused" for e in warnings), warnings

    # Nothing secret, anywhere in the output (raw text, so escaped copies would show too).
    secrets = {
        "BETTER_AUTH_SECRET": SERVER_SECRET,
        "database password": db_password,
        "Basic credentials": basic,
        "Basic password": basic_password,
        "session cookie": cookie,
        "password in a request body": body_password,
        "garbage bearer token": garbage,
    }
    for name, jwt in {"token": token, "other user's token": bob_token, "expired token": expired,
                      "foreign-signed token": foreign}.items():
        secrets[name] = jwt
        secrets[f"{name} (payload)"] = jwt.split(".")[1]
        secrets[f"{name} (signature)"] = jwt.split(".")[2]
    leaked = [name for name, value in secrets.items() if value in text]
    assert not leaked, f"in the logs: {leaked}"
    show(request, f"[logs] {len(text.splitlines())} JSON log lines, {len(access)} access lines "
                  f"for {len(sent)} requests, none of {len(secrets)} secrets present")
