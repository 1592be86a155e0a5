"""Logs a person can read: a real `task-api serve` on a terminal (a pseudo-terminal from Python's
`pty`) writes human-readable lines (time, level, message, request id; the access line with
method, path, status, duration and user), with colours; LOG_FORMAT=json|text overrides the
choice either way. (Everywhere else, one JSON object per line: tests/platform/test_logs.py.)"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from impl.platform.token_verifier import mint_hs256
from tests.support.reporting import show
from tests.support.servers import TASK_API, free_port, random_user_id, server_environment

SERVER_SECRET = f"log-format-SECRET-{uuid.uuid4().hex}"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"


@dataclass
class Made:
    method: str
    path: str
    status: int
    user: str | None
    request_id: str


class Output:
    """Everything the server writes to its stdout and stderr, from a pty or a pipe."""

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.data = bytearray()
        self._lock = threading.Lock()
        if terminal:
            self.reader, self.writer = pty.openpty()
        else:
            self.reader, self.writer = os.pipe()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        os.close(self.writer)  # the server holds its own copy
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.reader, 65536)
            except OSError:  # a pty's master reads EIO once the server is gone
                break
            if not chunk:
                break
            with self._lock:
                self.data.extend(chunk)

    def text(self) -> str:
        self._thread.join(timeout=10)
        os.close(self.reader)
        return bytes(self.data).decode()


def run_server(database_url: str, tmp_path: Path, terminal: bool, log_format: str | None
               ) -> tuple[str, list[Made], dict[str, str]]:
    """Serve, send a few requests (a good token, a garbage one), stop with SIGTERM; the raw
    output, the requests made, and the secrets that must not show."""
    output = Output(terminal)
    port = free_port()
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env = {**keep, **server_environment(database_url), "BETTER_AUTH_SECRET": SERVER_SECRET,
           "LOG_LEVEL": "INFO"}
    if log_format:
        env["LOG_FORMAT"] = log_format
    server = subprocess.Popen(
        [TASK_API, "serve", "--port", str(port)], env=env, cwd=tmp_path,
        stdin=subprocess.DEVNULL, stdout=output.writer, stderr=output.writer,
    )
    output.start()
    user = random_user_id()
    token = mint_hs256(SERVER_SECRET, user)
    garbage = f"garbage-{uuid.uuid4().hex}"
    made: list[Made] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            def send(method: str, path: str, status: int, who: str | None,
                     **kwargs: object) -> httpx.Response:
                response = http.request(method, path, **kwargs)  # type: ignore[arg-type]
                assert response.status_code == status, response.text
                made.append(Made(method, path, status, who, response.headers["x-request-id"]))
                return response

            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, bytes(output.data).decode()[-3000:]
                assert time.monotonic() < deadline, "server did not become ready"
                try:
                    if http.get("/api/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            bearer = {"Authorization": f"Bearer {token}"}
            send("GET", "/api/tasks", 200, user, headers=bearer)
            send("POST", "/api/tasks", 201, user, headers=bearer, json={"title": "read me"})
            send("GET", "/api/tasks", 401, None, headers={"Authorization": f"Bearer {garbage}"})
            send("GET", f"/api/tasks/{uuid.uuid4()}", 404, user, headers=bearer)
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(timeout=30) == 0
        except subprocess.TimeoutExpired:  # once, at load 12: say where it stood
            with output._lock:
                tail = bytes(output.data).decode(errors="replace")[-3000:]
            raise AssertionError(f"no exit 30 s after SIGTERM; its output ends:\n{tail}") from None
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    secrets = {"secret": SERVER_SECRET, "token": token, "garbage token": garbage,
               "token signature": token.split(".")[2]}
    return output.text(), made, secrets


def assert_text(raw: str, made: list[Made], port_line: bool = True) -> list[str]:
    lines = [ANSI.sub("", line) for line in raw.replace("\r\n", "\n").splitlines() if line]
    assert lines
    for line in lines:
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        assert not isinstance(parsed, dict), f"a JSON line in text mode: {line}"
    for request in made:
        pattern = (
            rf"{STAMP} INFO +{request.method} {re.escape(request.path)} {request.status} "
            rf"\d+(\.\d+)? ms user={request.user or '-'} request_id={request.request_id}"
        )
        found = [line for line in lines if re.fullmatch(pattern, line)]
        assert len(found) == 1, f"no access line /{pattern}/ in:\n" + "\n".join(lines)
    refused = next(r for r in made if r.status == 401)
    warning = (rf"{STAMP} WARNING task_api\.auth: token refused "
               rf'reason="Invalid token: malformed" request_id={refused.request_id}')
    assert any(re.fullmatch(warning, line) for line in lines), "\n".join(lines)
    if port_line:
        assert any(re.fullmatch(rf"{STAMP} INFO +uvicorn: Uvicorn running on http://\S+ "
                                r"\(Press CTRL\+C to quit\)", line) for line in lines), lines
    return lines


def assert_json(raw: str, made: list[Made]) -> list[dict[str, object]]:
    assert "\x1b" not in raw and "\\u001b" not in raw, "ANSI codes in JSON logs"
    entries = []
    for line in raw.replace("\r\n", "\n").splitlines():
        if line:
            entry = json.loads(line)
            assert isinstance(entry, dict) and "color_message" not in entry, line
            entries.append(entry)
    access = {e.get("request_id"): e for e in entries if e["logger"] == "task_api.access"}
    for request in made:
        line = access[request.request_id]
        assert (line["method"], line["path"], line["status"], line["user_id"]) == (
            request.method, request.path, request.status, request.user)
    return entries


def assert_no_secret(raw: str, secrets: dict[str, str]) -> None:
    leaked = [name for name, value in secrets.items() if value in raw]
    assert not leaked, f"in the logs: {leaked}"


def test_on_a_terminal_task_api_serve_writes_lines_for_a_person(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    raw, made, secrets = run_server(database_url, tmp_path, terminal=True, log_format=None)
    lines = assert_text(raw, made)
    assert "\x1b[" in raw, "no colours on a terminal"
    assert_no_secret(raw, secrets)
    access = next(line for line in lines if " GET /api/tasks 200 " in line)
    show(request, f"[log format] terminal: {len(lines)} text lines, e.g.\n  {access}")


def test_log_format_text_on_a_pipe_has_no_colours(database_url: str, tmp_path: Path) -> None:
    raw, made, secrets = run_server(database_url, tmp_path, terminal=False, log_format="text")
    assert "\x1b" not in raw, "colour codes outside a terminal"
    assert_text(raw, made)
    assert_no_secret(raw, secrets)


def test_log_format_json_on_a_terminal(database_url: str, tmp_path: Path) -> None:
    raw, made, secrets = run_server(database_url, tmp_path, terminal=True, log_format="json")
    entries = assert_json(raw, made)
    assert any(e["message"].startswith("Uvicorn running on") for e in entries)  # type: ignore[union-attr]
    assert_no_secret(raw, secrets)
