"""The server starts while its database is unreachable: it serves 503 (health stays 200), says
why in its log, retries with backoff, and serves normally once the database answers, without a
restart.

The main case runs `task-api serve` as a deployment would (its own process, JSON log lines on
stderr) against a migrated PostgreSQL that is stopped at the time, then starts PostgreSQL.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.support.factories import new_user
from tests.support.servers import (
    SECRET,
    TASK_API,
    StoppablePostgres,
    free_port,
    running_server,
    settings,
    stop,
)

RECOVERY_LIMIT_SECONDS = 5.0
# What a refused connection says (asyncpg: ConnectionRefusedError "Connect call failed").
REFUSED = re.compile(r"refused|connect call failed|errno 111", re.IGNORECASE)


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    base_url: str
    lines: list[str] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (other lines, such as tracebacks, are skipped)."""
        out = []
        for line in list(self.lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def db_warnings(self) -> list[dict[str, Any]]:
        """The database layer's own complaints: not the per-request 503 lines."""
        return [
            r for r in self.records()
            if r.get("logger") == "task_api.db" and r.get("level") in ("WARNING", "ERROR")
        ]

    def log_text(self) -> str:
        return "\n".join(self.lines[-60:])


@contextmanager
def task_api_serve(database_url: str, **env: str) -> Iterator[ServerProcess]:
    """`task-api serve` in its own process, its stderr collected line by line."""
    port = free_port()
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    environment = {
        **keep, "DATABASE_URL": database_url, "BETTER_AUTH_SECRET": SECRET,
        "LOG_LEVEL": "INFO", **env,
    }
    with tempfile.TemporaryDirectory(prefix="task-api-serve-") as cwd:  # no stray .env
        process = subprocess.Popen(
            [TASK_API, "serve", "--port", str(port)], env=environment, cwd=cwd,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )
        server = ServerProcess(process, f"http://127.0.0.1:{port}")

        def collect() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                server.lines.append(line.rstrip("\n"))

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        try:
            yield server
        finally:
            stop(process, timeout=20)
            reader.join(timeout=5)


def wait_for_health(server: ServerProcess, timeout: float) -> float:
    """Seconds until /api/health answered 200."""
    started = time.monotonic()
    while True:
        if server.process.poll() is not None:
            pytest.fail(f"task-api serve exited with {server.process.returncode}:\n"
                        + server.log_text())
        try:
            if httpx.get(f"{server.base_url}/api/health", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        if time.monotonic() - started > timeout:
            pytest.fail("task-api serve did not answer /api/health:\n" + server.log_text())
        time.sleep(0.1)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert response.headers["retry-after"].isdigit()
    assert response.json()["meta"]["request_id"] == response.headers["x-request-id"]


def _time(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["time"])).timestamp()


def test_serve_starts_without_its_database_and_serves_once_it_answers(
    stoppable_postgres: StoppablePostgres,
) -> None:
    postgres = stoppable_postgres
    postgres.stop()
    user = new_user()
    with task_api_serve(postgres.url) as server:
        startup = wait_for_health(server, timeout=30)
        pid = server.process.pid

        # Up, and honest about the database.
        ready = httpx.get(f"{server.base_url}/api/ready", timeout=30)
        assert_unavailable(ready)
        listing = httpx.get(f"{server.base_url}/api/tasks", headers=user.headers, timeout=30)
        assert_unavailable(listing)
        create = httpx.post(
            f"{server.base_url}/api/tasks", json={"title": "too early"}, headers=user.headers,
            timeout=30,
        )
        assert_unavailable(create)

        # Why, in the log, and again at growing intervals.
        deadline = time.monotonic() + 20
        while len(server.db_warnings()) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        warnings = server.db_warnings()
        assert warnings, "nothing logged about the database:\n" + server.log_text()
        assert all(REFUSED.search(str(w["message"])) for w in warnings), (
            "a database warning does not say why:\n" + "\n".join(str(w) for w in warnings)
        )
        attempts = [_time(w) for w in warnings]
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        print(f"\n[startup] health after {startup:.2f}s; database warnings at gaps "
              f"{[round(g, 2) for g in gaps]}; last: {warnings[-1]['message']}")
        assert len(warnings) >= 4, (
            f"{len(warnings)} database warnings in 20 s: no retries?\n" + server.log_text()
        )
        assert all(b >= a * 0.8 for a, b in itertools.pairwise(gaps)), gaps
        assert gaps[-1] >= 1.5 * gaps[0], f"retries do not back off: gaps {gaps}"

        # The database comes back: the same process serves, without a restart.
        postgres.start()
        back = time.monotonic()
        created = None
        while time.monotonic() - back < RECOVERY_LIMIT_SECONDS + 5:
            response = httpx.post(
                f"{server.base_url}/api/tasks", json={"title": "on time"}, headers=user.headers,
                timeout=30,
            )
            if response.status_code == 201:
                created = time.monotonic() - back
                break
            assert_unavailable(response)
            time.sleep(0.1)
        print(f"[startup] first write acknowledged {created}s after the database was up")
        assert created is not None and created <= RECOVERY_LIMIT_SECONDS, server.log_text()
        assert httpx.get(f"{server.base_url}/api/ready", timeout=30).status_code == 200
        listing = httpx.get(f"{server.base_url}/api/tasks", headers=user.headers, timeout=30)
        assert listing.status_code == 200
        assert [t["title"] for t in listing.json()["data"]] == ["on time"]
        assert server.process.poll() is None and server.process.pid == pid


@contextmanager
def silent_database() -> Iterator[str]:
    """A port that accepts TCP connections and never says a word: a database host that hangs
    (a firewall dropping packets, a frozen VM) rather than refusing."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # never accepted: the kernel completes handshakes, nobody answers
        port = listener.getsockname()[1]
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"


def test_a_database_that_does_not_answer_delays_neither_start_nor_answers() -> None:
    timeout = 1.0
    with silent_database() as url:
        app_settings = settings(
            url, db_connect_timeout_seconds=timeout, db_command_timeout_seconds=timeout,
            db_acquire_timeout_seconds=timeout,
        )
        started = time.monotonic()
        with running_server(app_settings) as base_url:
            startup = time.monotonic() - started
            user = new_user()
            for method, path in (("GET", "/api/ready"), ("GET", "/api/tasks"),
                                 ("POST", "/api/tasks")):
                began = time.monotonic()
                body = {"title": "x"} if method == "POST" else None
                response = httpx.request(
                    method, base_url + path, headers=user.headers, json=body, timeout=30
                )
                elapsed = time.monotonic() - began
                assert_unavailable(response)
                assert elapsed <= 2 * timeout + 1.0, f"{method} {path} took {elapsed:.2f}s"
            health = httpx.get(base_url + "/api/health", timeout=30)
            assert health.status_code == 200
        print(f"\n[startup, silent database] server up after {startup:.2f}s")
        assert startup <= timeout + 2.0
