"""SC-009 under load: 100 concurrent users against one real `task-api serve` process.

Each user loops a mixed create / list / patch / delete workflow for LOAD_SECONDS (default 60),
driven by scripts/load.py in its own process (its own CPU). Then: no error, no user ever saw
another user's task, and the database holds, for every user, exactly the tasks it was told were
created and not deleted, with the last title, completed flag and version it was given.
Figures (throughput, p50/p95/p99 per operation) go to artifacts/load.json and stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scripts.local_stack.writes import differences as rows_differing_from
from tests.support.artifacts import artifact
from tests.support.reporting import show
from tests.support.servers import (
    SECRET,
    TASK_API,
    free_port,
    server_environment,
    stop,
    wait_ready,
)

ROOT = Path(__file__).resolve().parents[2]
USERS = 100
SECONDS = float(os.environ.get("LOAD_SECONDS", "60"))
REPORT = artifact("load.json")


@contextmanager
def serve(database_url: str, log_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`task-api serve` as a user starts it; stops it with SIGTERM."""
    port = free_port()
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    # In the PgBouncer pass the server goes through the pooler, like every other server.
    env = {**keep, **server_environment(database_url), "BETTER_AUTH_SECRET": SECRET,
           "LOG_LEVEL": "WARNING"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [TASK_API, "serve", "--port", str(port)], env=env, cwd=log_path.parent,
            stdout=log, stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, base_url, log_path)
        yield base_url, process
    finally:
        stop(process, timeout=30)


async def test_100_users_mixed_workload_no_error_no_leak_no_lost_write(
    database_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    state_path = tmp_path / "state.json"
    log_path = tmp_path / "server.log"
    with serve(database_url, log_path) as (base_url, server):
        runner = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "scripts" / "load.py"), "--base-url", base_url,
            "--secret", SECRET, "--users", str(USERS), "--seconds", str(SECONDS),
            "--out", str(REPORT), "--state", str(state_path),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(runner.communicate(), timeout=SECONDS + 180)
        show(request, output.decode().rstrip())
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(timeout=30)
    server_log = log_path.read_text()
    assert runner.returncode in (0, 1), output.decode()[-3000:]
    report = json.loads(REPORT.read_text())

    assert report["error_count"] == 0, json.dumps(report["errors"][:10], indent=1)
    assert report["leak_count"] == 0, json.dumps(report["leaks"][:10], indent=1)
    assert report["mismatch_count"] == 0, json.dumps(report["mismatches"][:10], indent=1)
    assert report["requests"] > USERS, "the load did not run"

    # The database holds exactly what each user was told: created and not deleted, last values.
    state = json.loads(state_path.read_text())
    assert len(state) == USERS
    differences, row_count = await rows_differing_from(database_url, state)
    assert not differences, (
        f"{len(differences)} users' rows differ from what they were acknowledged, e.g. "
        f"{json.dumps(next(iter(differences.items())), indent=1)[:3000]}"
    )
    assert row_count == report["tasks_remaining"]

    assert exit_code == 0, server_log[-3000:]
    errors = [line for line in server_log.splitlines()
              if not line.startswith("{") or json.loads(line).get("level") in ("ERROR", "CRITICAL")]
    assert not errors, "\n".join(errors[:10])

    report["database_rows_match"] = True
    report["database_rows"] = row_count
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
