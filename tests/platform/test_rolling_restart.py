"""The deploy recipe with real parts (scripts/local_stack): two `task-api serve` replicas
through PgBouncer (transaction mode), behind Debian's HAProxy (health checks on /api/ready,
safe retries, redispatch).

- A rolling restart under load: scripts/load.py (32 users, every POST with an Idempotency-Key)
  through HAProxy while each replica in turn gets SIGTERM, exits, starts again and is put back
  by HAProxy before the next one goes. Not one request fails and the database holds exactly
  what every user was told. The load runs until the restart is over (and a moment more, so
  both new replicas serve it), however long that takes on a busy machine.
  Meanwhile STREAM_USERS more users write their own tasks and follow them on the live stream
  through HAProxy: each stream ends when its replica stops (`retry:`, then the end), and the
  client reconnects with Last-Event-ID. After the writes, and the `up-to-date` that follows
  the last one, each client's copy is the database's state for its user, field by field.
- A cursor issued by one replica works on the other.
- One Idempotency-Key sent to both replicas at once creates one task.
- The hand-over itself, on one replica: after SIGTERM its listener stays open, /api/ready
  answers 503, requests are still served and every response closes its connection; once
  requests stop coming it closes and exits 0.

The stack brings its own PgBouncer: the suite's PgBouncer pass skips these tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from impl.platform.token_verifier import mint_hs256
from scripts.local_stack.replicas import Replica
from scripts.local_stack.stack import Stack, running_stack
from scripts.local_stack.writes import differences
from tests.support.factories import THROUGH_PGBOUNCER
from tests.support.reporting import show
from tests.support.servers import SECRET, direct_connection, free_port, random_user_id
from tests.support.streaming_users import StreamingUsers
from tests.support.task_state import as_stored, tasks_in_database

pytestmark = pytest.mark.skipif(
    THROUGH_PGBOUNCER, reason="brings its own PgBouncer: runs in the direct pass")

ROOT = Path(__file__).resolve().parents[2]
USERS = 32
SWING_REQUESTS = 1000  # through HAProxy before the first replica is stopped
AFTER_RESTART_SECONDS = 1.0  # of load once the last replica is back
MAX_LOAD_SECONDS = 600  # load.py's own bound; the test stops it long before
STREAM_USERS = 4  # writing and following their live stream through HAProxy
STREAM_TIMEOUT = 60.0  # for a stream to open or deliver, on 2 shared cores: generous


@pytest.fixture(scope="module")
def stack(database_url: str) -> Iterator[Stack]:
    # The limiter runs but never limits the load (32 users at ~30 requests per second each).
    env = {"RATE_LIMIT_PER_SECOND": "1000000", "RATE_LIMIT_BURST": "1000000",
           "LOG_LEVEL": "WARNING"}  # no access line a request: the load's CPU is the API's
    with running_stack(2, database_url=database_url, secret=SECRET, env=env) as running:
        yield running


def headers(user_id: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_hs256(SECRET, user_id)}", **extra}


def served(stack: Stack) -> int:
    return sum(int(row["stot"]) for row in stack.haproxy.servers().values())


async def test_rolling_restart_under_load_fails_no_request_and_loses_no_write(
    stack: Stack, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    state_path, report_path = tmp_path / "state.json", tmp_path / "load.json"
    before = {name: dict(row) for name, row in stack.haproxy.servers().items()}
    streaming = StreamingUsers(stack.url, STREAM_USERS)
    try:
        await streaming.start_following(STREAM_TIMEOUT)
        streaming.start_writing()
        await _rolling_restart_under_load(stack, database_url, streaming, before, state_path,
                                          report_path, request)
    finally:
        await streaming.close()


async def _rolling_restart_under_load(
    stack: Stack, database_url: str, streaming: StreamingUsers,
    before: dict[str, dict[str, str]], state_path: Path, report_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    runner = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "scripts" / "load.py"), "--base-url", stack.url,
        "--secret", SECRET, "--users", str(USERS), "--seconds", str(MAX_LOAD_SECONDS),
        "--idempotency-keys", "--out", str(report_path), "--state", str(state_path),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output = b""
    try:
        start = served(stack)
        deadline = time.monotonic() + 120
        while served(stack) - start < SWING_REQUESTS:  # the load is in full swing
            assert runner.returncode is None, "load.py exited early"
            assert time.monotonic() < deadline, "the load did not start"
            await asyncio.sleep(0.05)
        began = time.monotonic()
        steps = await asyncio.to_thread(stack.rolling_restart)
        restart_seconds = time.monotonic() - began
        await asyncio.sleep(AFTER_RESTART_SECONDS)
        await streaming.stop_writing()
        runner.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(runner.communicate(), timeout=120)
        await streaming.last_write_seen(STREAM_TIMEOUT)
    finally:
        if runner.returncode is None:
            runner.kill()
            await runner.wait()
    show(request, output.decode().rstrip())
    assert runner.returncode in (0, 1), output.decode()[-3000:]
    report = json.loads(report_path.read_text())
    after = stack.haproxy.servers()
    counters = {
        name: {key: int(after[name][key]) - int(before[name][key])
               for key in ("stot", "econ", "eresp", "wretr", "wredis")}
        for name in after
    }
    show(request, f"[rolling restart] {restart_seconds:.1f} s for {len(steps)} replicas: "
                  f"{steps}; haproxy per replica during the run: {counters}")

    assert [step["exit"] for step in steps] == [0, 0]
    assert report["error_count"] == 0, json.dumps(report["errors"][:10], indent=1)
    assert report["leak_count"] == 0, json.dumps(report["leaks"][:10], indent=1)
    assert report["mismatch_count"] == 0, json.dumps(report["mismatches"][:10], indent=1)
    # Both replicas took load, and each took requests after its restart (it was back in).
    assert all(c["stot"] > 0 for c in counters.values()), counters
    # No acknowledged write lost, nothing stored that was not acknowledged.
    state = json.loads(state_path.read_text())
    assert len(state) == USERS and not any(user["uncertain"] for user in state.values())
    differing, rows = await differences(database_url, state)
    assert not differing, (
        f"{len(differing)} users' rows differ from what they were acknowledged, e.g. "
        f"{json.dumps(next(iter(differing.items())), indent=1)[:3000]}"
    )
    assert rows == report["tasks_remaining"]
    for replica in stack.replicas:
        assert replica.starts == 2
        assert "Traceback" not in replica.log(), replica.log()[-3000:]
    await _streams_hold_the_database_state(database_url, streaming, request)


async def _streams_hold_the_database_state(
    database_url: str, streaming: StreamingUsers, request: pytest.FixtureRequest
) -> None:
    followers = [user.follower for user in streaming.users]
    show(request, "[streams through the rolling restart] per user: reconnects "
                  f"{[f.reconnects for f in followers]}, streams ended "
                  f"{[dict(f.endings) for f in followers]}, events "
                  f"{[len(f.received) for f in followers]}, last write -> its event "
                  f"{[round((u.last_write_latency or 0) * 1000) for u in streaming.users]} ms; "
                  f"writes {[dict(u.writes) for u in streaming.users]}")
    async with direct_connection(database_url) as db:
        for user in streaming.users:
            stored = await tasks_in_database(db, user.user.id)
            assert len(stored) > 1  # it wrote, and kept some
            assert as_stored(user.follower.tasks) == stored, user.user.id
    # Every replica was stopped once, so every stream was ended at least once and resumed.
    assert all(f.reconnects >= 1 for f in followers)


async def test_a_cursor_from_one_replica_works_on_the_other(stack: Stack) -> None:
    first, second = stack.replicas
    user_id = random_user_id()
    async with httpx.AsyncClient(timeout=30) as http:
        for n in range(3):
            created = await http.post(f"{first.url}/api/tasks", json={"title": f"c{n}"},
                                      headers=headers(user_id))
            assert created.status_code == 201
        page = await http.get(f"{first.url}/api/tasks", params={"limit": 2},
                              headers=headers(user_id))
        cursor = page.json()["meta"]["next_cursor"]
        assert cursor
        rest = await http.get(f"{second.url}/api/tasks", params={"limit": 2, "cursor": cursor},
                              headers=headers(user_id))
    assert rest.status_code == 200, rest.text
    titles = [t["title"] for t in page.json()["data"]] + [t["title"] for t in rest.json()["data"]]
    assert titles == ["c2", "c1", "c0"]
    assert rest.json()["meta"]["next_cursor"] is None


async def test_one_idempotency_key_sent_to_both_replicas_at_once_creates_one_task(
    stack: Stack, db: asyncpg.Connection
) -> None:
    first, second = stack.replicas
    attempts = 20
    user_id = random_user_id()
    keys = [str(uuid.uuid4()) for _ in range(attempts)]
    async with httpx.AsyncClient(timeout=30) as a, httpx.AsyncClient(timeout=30) as b:
        for client in (a, b):  # open connections first: the two POSTs then leave together
            assert (await client.get(f"{first.url}/api/health")).status_code == 200
            assert (await client.get(f"{second.url}/api/health")).status_code == 200
        pairs = []
        for n, key in enumerate(keys):
            body = {"title": f"once {n}"}
            pairs.append(await asyncio.gather(
                a.post(f"{first.url}/api/tasks", json=body,
                       headers=headers(user_id, **{"Idempotency-Key": key})),
                b.post(f"{second.url}/api/tasks", json=body,
                       headers=headers(user_id, **{"Idempotency-Key": key})),
            ))
    for one, other in pairs:
        assert (one.status_code, other.status_code) == (201, 201), (one.text, other.text)
        assert one.json()["data"]["id"] == other.json()["data"]["id"]
    rows = await db.fetch("SELECT title, count(*) AS n FROM tasks WHERE user_id = $1 "
                          "GROUP BY title", user_id)
    assert {r["title"]: r["n"] for r in rows} == {f"once {n}": 1 for n in range(attempts)}


def log_count(replica: Replica, message: str) -> int:
    return sum(message in line for line in replica.log().splitlines())


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_stopping_replica_fails_readiness_keeps_serving_and_closes_connections(
    database_url: str, tmp_path: Path, workers: int
) -> None:
    """With --workers 2 too: uvicorn's supervisor passes SIGTERM to every worker, and each
    one hands over (its own log line says so)."""
    grace = 3.0
    env = {"DATABASE_URL": database_url, "BETTER_AUTH_SECRET": SECRET, "LOG_FORMAT": "json",
           "LOG_LEVEL": "INFO", "SHUTDOWN_READY_GRACE_SECONDS": str(grace)}
    replica = Replica("solo", env, tmp_path, workers=workers)
    await asyncio.to_thread(replica.start)
    assert replica.process is not None
    user_id = random_user_id()
    try:
        async with httpx.AsyncClient(base_url=replica.url, timeout=30) as http:
            ready = await http.get("/api/ready")
            assert ready.status_code == 200 and "connection" not in ready.headers
            sigterm_at = time.monotonic()
            replica.process.send_signal(signal.SIGTERM)
            while log_count(replica, "stopping: /api/ready answers 503") < workers:
                assert time.monotonic() - sigterm_at < grace, replica.log()[-3000:]
                await asyncio.sleep(0.01)  # every worker has begun its hand-over
            ready = await http.get("/api/ready")
            assert ready.status_code == 503, ready.text
            assert ready.json()["error"]["message"] == "Server is stopping"
            assert ready.headers["connection"] == "close"
            served = []
            while time.monotonic() - sigterm_at < grace - 0.5:  # within the grace: served
                response = await http.post("/api/tasks", json={"title": "while stopping"},
                                           headers=headers(user_id))
                served.append((response.status_code, response.headers.get("connection")))
                await asyncio.sleep(0.1)
        code = await asyncio.to_thread(replica.process.wait, 60)
        exited_after = time.monotonic() - sigterm_at
    finally:
        replica.close()
    assert served and set(served) == {(201, "close")}, served
    assert code == 0, replica.log()[-3000:]
    assert exited_after >= grace  # the listener stayed open for the whole grace
    assert log_count(replica, "closing the listener") == workers


def test_the_recipe_refuses_a_taken_port_before_starting_anything(tmp_path: Path) -> None:
    """HAProxy's port taken: one line naming it and a free one, exit 2, and nothing started
    (no PostgreSQL under DATA_DIR), where it once started everything and died in HAProxy."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts/deploy_local.py"), "--port", str(port)],
            env=recipe_env(DATA_DIR=str(tmp_path / "data")), cwd=tmp_path, capture_output=True,
            text=True, timeout=60, check=False,
        )
    assert result.returncode == 2, result
    line, = result.stderr.splitlines()
    assert line.startswith(f"deploy_local: port {port} on 127.0.0.1 is taken by another "
                           "program: choose another with --port"), line
    assert not (tmp_path / "data").exists()


def recipe_env(**settings: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, "PYTHONPATH": str(ROOT), **settings}


def test_the_recipe_honours_the_log_level_and_keeps_the_logs(
    database_url: str, tmp_path: Path
) -> None:
    """The recipe once forced the replicas' LOG_LEVEL to WARNING (no request lines, and .env
    could not raise it) and removed their log folder on Ctrl-C. LOG_LEVEL=INFO in .env: the
    request made through HAProxy is in a replica's log, which is still there after Ctrl-C."""
    (tmp_path / ".env").write_text("LOG_LEVEL=INFO\n")
    port = free_port()
    recipe = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts/deploy_local.py"), "--replicas", "1",
         "--port", str(port)],
        env=recipe_env(DATABASE_URL=database_url, BETTER_AUTH_SECRET=SECRET,
                       DATA_DIR=str(tmp_path / "data")),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    try:
        assert recipe.stdout is not None
        deadline = time.monotonic() + 120
        while not any(line.startswith("  logs: ") for line in output):
            line = recipe.stdout.readline()
            assert line or recipe.poll() is None, "".join(output)
            assert time.monotonic() < deadline, "".join(output)
            output.append(line)
        user = random_user_id()
        response = httpx.get(f"http://127.0.0.1:{port}/api/tasks", timeout=10,
                             headers={"Authorization": f"Bearer {mint_hs256(SECRET, user)}"})
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]
    finally:
        recipe.send_signal(signal.SIGINT)
        rest, _ = recipe.communicate(timeout=60)
        output.append(rest)
    assert recipe.returncode == 0, "".join(output)
    log_dir = Path(next(line for line in output if line.startswith("  logs: "))[8:].strip())
    assert f"the replicas' logs are kept in {log_dir}" in "".join(output)
    assert log_dir.is_relative_to(tmp_path / "data" / "deploy-logs")
    lines = [json.loads(line) for path in log_dir.glob("*.log")
             for line in path.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("request_id") == request_id]
    assert access and access[0]["level"] == "INFO", lines[-5:]
