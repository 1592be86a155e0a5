"""HTTP benchmark: the API against a minimal Starlette + raw asyncpg baseline, on one PostgreSQL.

    .venv/bin/python scripts/bench.py [--duration 10] [--rounds 2] [--quick]

What it does, in one run (48 minutes by default on a loaded 2-core machine since the matrix holds 50 shapes; a few with --quick):

1. Starts a private PostgreSQL (pgserver, in a temporary directory, deleted at the end), applies
   the migrations, and bulk-loads realistic tasks with COPY: a bench user with 2,000 tasks, a
   writer user for POST, and one user per scale size (100, 1k, 10k, 100k tasks).
2. Starts `task-api serve --workers 1` (exactly what users run), the baseline
   (bench/baseline_app.py under uvicorn with the same flags) and the write ceiling (the baseline
   writing to bench/ceiling.py's plain table), and checks that they answer the same requests
   with the same data, statuses and envelope before measuring anything.
3. Loads each endpoint with wrk (Debian's; installed with apt-get when missing): GET
   /api/tasks?limit=20, GET /api/tasks/{id}, POST /api/tasks, PATCH /api/tasks/{id}, DELETE
   /api/tasks/{id}, 2 threads, 16 connections, a warm-up run, then measured runs alternating ours
   / baseline (/ ceiling, for the writes) for --rounds rounds; reports the median requests/s,
   p50 and p99, the ratios, and the CPU per request of server, PostgreSQL and wrk
   (bench/cpu_share.py).
4. Scale: first-page latency of the default list and of status=pending for users with 100 to
   100,000 tasks (wrk, one connection: sequential requests, thousands of samples per point,
   points measured round-robin and the median taken), ours and the baseline, with the SQL alone
   timed next to it; draws the curve to docs/perf/scale.png.
5. Matrix (bench/matrix.py): every list query shape at every size, first and next page, over
   HTTP and the statement alone, with the growth from 100 to 100,000 tasks at equal answers
   (a page short at 100 tasks is compared with the same request, limit set to its task count,
   at 100,000) next to the limit=20 growth; draws docs/perf/matrix.png.
6. Workers: the list's throughput with `task-api serve --workers 1` and `--workers 2`, and the
   baseline's with one and two, in the same rounds, with what the CPU per request allows.

`--parts` runs only some of 3-6.

Figures are printed and written to docs/perf/latest.json and docs/perf/latest.md (--quick writes
to artifacts/perf/ instead, so a smoke run does not replace the published figures). Nothing is
asserted on the figures; the exit status is 1 only when a request failed (non-2xx or socket
errors), which makes the figures meaningless.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import ceiling, cpu_share
from bench import matrix as bench_matrix
from bench.data import copy_tasks, task_rows
from impl.platform.embedded import api_role_url
from impl.platform.migrate import upgrade
from impl.platform.settings import Settings
from impl.platform.token_verifier import mint_hs256
from scripts.local_stack.processes import free_port  # also bench_*.py's, as bench_main.free_port

LUA = REPO / "bench" / "requests.lua"
SECRET = "bench-secret-" + "s" * 40
NAMESPACE = uuid.UUID("6d1f3c2a-0b6e-4c55-9a57-2f4c1d8e9b10")
# User ids as Better Auth makes them by default: 32 letters and digits (stable across runs).
BENCH_USER = uuid.uuid5(NAMESPACE, "bench-user-2000").hex
WRITER_USER = uuid.uuid5(NAMESPACE, "bench-writer").hex
# DELETE runs delete tasks loaded for the run, of a user of their own (deleter_user): this many
# per second of the run, more than a server deletes, so that no request finds its task gone.
DELETES_PER_SECOND = 4000
BENCH_TASKS = 2000
SCALE_SIZES = (100, 1_000, 10_000, 100_000)
QUICK_SCALE_SIZES = (100, 1_000, 10_000)
THREADS, CONNECTIONS = 2, 16
ROTATING_IDS = 500  # tasks of the bench user that GET and PATCH rotate over
# The table also holds other users' tasks, as a shared one would: 100 users of 1,000 tasks.
OTHER_USERS, OTHER_TASKS = 100, 1_000


def scale_user(size: int) -> str:
    return uuid.uuid5(NAMESPACE, f"bench-scale-{size}").hex


def deleter_user(run: int) -> str:
    return uuid.uuid5(NAMESPACE, f"bench-deleter-{run}").hex


def other_user(index: int) -> str:
    return uuid.uuid5(NAMESPACE, f"bench-other-{index}").hex


def say(message: str = "") -> None:
    print(message, flush=True)


def banner(message: str) -> None:
    line = "!" * 78
    say(f"\n{line}\n!!! {message}\n{line}\n")


# --- wrk --------------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() != 0:
        sys.exit("bench: wrk is not installed. Install it with `sudo apt-get install wrk` "
                 "(Debian's package) and run again.")
    say("bench: wrk is not installed; installing Debian's package: apt-get install -y wrk ...")
    subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "wrk"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                   stdout=subprocess.DEVNULL)
    path = shutil.which("wrk")
    if not path:
        sys.exit("bench: apt-get install wrk did not put wrk on PATH")
    return path


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


@dataclass
class WrkResult:
    rps: float
    p50: float
    p99: float
    requests: int
    non_2xx: int
    socket_errors: int
    raw: str = field(repr=False)
    cpu: dict[str, float] = field(default_factory=dict)  # bench/cpu_share.py, per request

    @property
    def failed(self) -> bool:
        return self.non_2xx > 0 or self.socket_errors > 0 or self.requests == 0

    def brief(self) -> dict[str, Any]:
        return {"rps": round(self.rps, 1), "p50_ms": round(self.p50, 3),
                "p99_ms": round(self.p99, 3), "requests": self.requests,
                "non_2xx": self.non_2xx, "socket_errors": self.socket_errors, "cpu": self.cpu}


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    total = re.search(r"(\d+) requests in", output)
    if not (rps and p50 and p99 and total):
        raise RuntimeError(f"could not parse wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        rps=float(rps.group(1)), p50=_ms(p50.group(1)), p99=_ms(p99.group(1)),
        requests=int(total.group(1)), non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0, raw=output,
    )


@dataclass(frozen=True)
class Load:
    """One kind of request: a URL path for plain GETs, or a mode of bench/requests.lua."""

    name: str
    path: str = "/"
    lua_mode: str | None = None


def run_wrk(base_url: str, load: Load, token: str, seconds: float, ids_file: Path,
            threads: int = THREADS, connections: int = CONNECTIONS) -> WrkResult:
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
        "--timeout", "10s", "-H", f"Authorization: Bearer {token}",
    ]
    if load.lua_mode:
        command += ["-s", str(LUA), base_url, "--", load.lua_mode, str(ids_file)]
    else:
        command.append(base_url + load.path)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}\n{done.stdout}")
    return parse_wrk(done.stdout + done.stderr)


# --- PostgreSQL and data --------------------------------------------------------------------------

async def load_data(url: str, sizes: tuple[int, ...], others: int) -> dict[str, Any]:
    rng = random.Random(2026)
    now = dt.datetime.now(dt.UTC)
    connection = await asyncpg.connect(url)
    try:
        users = [(BENCH_USER, BENCH_TASKS), *((scale_user(size), size) for size in sizes),
                 *((other_user(index), OTHER_TASKS) for index in range(others))]
        for user_id, count in users:
            await copy_tasks(connection, [user_id], task_rows(user_id, count, rng, now))
        await connection.execute("VACUUM ANALYZE")
        ids = await connection.fetch(
            "SELECT id FROM tasks WHERE user_id = $1 ORDER BY random() LIMIT $2",
            BENCH_USER, ROTATING_IDS,
        )
        version = await connection.fetchval("SHOW server_version")
        total = await connection.fetchval("SELECT count(*) FROM tasks")
    finally:
        await connection.close()
    return {"ids": [str(record["id"]) for record in ids], "postgres": version, "rows": total,
            "now": now}


async def reset_writes(url: str, deleter: str | None = None) -> int:
    """After a POST or PATCH run: drop the writer's tasks and vacuum, so every run starts from
    the same tables, whichever server wrote last. The counter tables too: every write (and every
    deleted task) updates the writer's counter rows, which otherwise pile up dead versions from
    run to run until autovacuum happens to come by, in the middle of some later run. The
    checkpoint writes out what the last run dirtied, so that the next run (the other server's)
    does not pay for it. The ceiling's table likewise, and a DELETE run's remaining tasks (their
    count returned) and tombstones."""
    connection = await asyncpg.connect(url)
    left = 0
    try:
        for table in ("tasks", ceiling.TABLE):
            await connection.execute(f"DELETE FROM {table} WHERE user_id = $1", WRITER_USER)
        if deleter:
            # Tens of thousands of tasks left: deleted with the triggers off (replica role), and
            # what they kept (counters, task_tags) deleted directly, instead of a trigger run,
            # a counter row update and a NOTIFY for every one of them.
            async with connection.transaction():
                await connection.execute("SET LOCAL session_replication_role = replica")
                for table in ("tasks", ceiling.TABLE):
                    left += int((await connection.execute(
                        f"DELETE FROM {table} WHERE user_id = $1", deleter)).split()[-1])
                for table in ("task_counts", "task_tag_counts", "task_tags"):
                    await connection.execute(f"DELETE FROM {table} WHERE user_id = $1", deleter)
        await connection.execute("TRUNCATE task_tombstones")
        await connection.execute(f"VACUUM ANALYZE tasks, {ceiling.TABLE}")
        await connection.execute("VACUUM ANALYZE task_counts, task_tag_counts, task_tags")
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()
    return int(left)


async def load_victims(url: str, table: str, user: str, count: int, seed: int) -> list[str]:
    """A DELETE run's tasks: `count` tasks of a new user in `table` (tasks, with its counters
    and task_tags, or the ceiling's); their ids, shuffled."""
    rng = random.Random(seed)
    rows = task_rows(user, count, rng, dt.datetime.now(dt.UTC))
    connection = await asyncpg.connect(url)
    try:
        if table == "tasks":
            await copy_tasks(connection, [user], rows)
        else:
            from bench.data import COPY_COLUMNS

            await connection.copy_records_to_table(table, records=rows, columns=COPY_COLUMNS)
        await connection.execute(f"VACUUM ANALYZE {table}")
    finally:
        await connection.close()
    ids = [str(row[0]) for row in rows]
    rng.shuffle(ids)
    return ids


async def create_ceiling(url: str) -> None:
    """The ceiling's table (bench/ceiling.py), with copies of the bench user's tasks for PATCH."""
    connection = await asyncpg.connect(url)
    try:
        for statement in ceiling.CREATE:
            await connection.execute(statement)
        await connection.execute(ceiling.COPY_USER, BENCH_USER)
        await connection.execute(f"VACUUM ANALYZE {ceiling.TABLE}")
    finally:
        await connection.close()


async def sql_timings(url: str, sizes: tuple[int, ...], samples: int) -> dict[str, Any]:
    """The list's statement alone (page + total from the counters, one round trip), timed from
    Python over the same socket: the database's share of a first-page request. Next to it, what
    a count(*) of the matching rows costs, the total before migration 0002."""
    from bench.sql import COUNT_SQL, LIST_SQL

    connection = await asyncpg.connect(url, server_settings=bench_matrix.GENERIC_PLANS)
    out: dict[str, Any] = {}

    async def median_ms(sql: str, *args: Any) -> float:
        for _ in range(samples // 10):
            await connection.fetch(sql, *args)
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            await connection.fetch(sql, *args)
            times.append((time.perf_counter() - start) * 1000)
        return round(statistics.median(times), 3)

    try:
        for size in sizes:
            for status in ("all", "pending"):
                user_id = scale_user(size)
                out[f"{size}:{status}"] = {
                    "list_ms": await median_ms(LIST_SQL[status], user_id, 21),
                    "count_star_ms": await median_ms(COUNT_SQL[status], user_id),
                }
    finally:
        await connection.close()
    return out


# --- servers --------------------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, command: list[str], env: dict[str, str], port: int,
                 workdir: Path, log_path: Path) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.table = "tasks"  # the table its writes go to (the ceiling: bench/ceiling.py)
        self.log = log_path.open("w")
        # Its own process group: uvicorn's worker processes are stopped with it.
        self.process = subprocess.Popen(command, env=env, cwd=workdir, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/api/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        tail = self.log_path.read_text()[-3000:]
        raise RuntimeError(f"{self.name} did not become healthy on {self.url}:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def server_env(database_url: str) -> dict[str, str]:
    """The caller's environment without any of the API's settings, then ours: the figures do not
    depend on what happens to be exported in the shell."""
    names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    env.update(DATABASE_URL=database_url, BETTER_AUTH_SECRET=SECRET, LOG_LEVEL="WARNING")
    # wrk is one user at thousands of requests a second: the rate limiter runs and sends its
    # headers (its cost is in the figures) but never refuses; the task quota stays as shipped
    # (and the baseline, reading the same environment, enforces the same one).
    env.update(RATE_LIMIT_PER_SECOND="1000000000", RATE_LIMIT_BURST="1000000000")
    return env


def start_ours(database_url: str, workers: int, workdir: Path) -> Server:
    task_api = Path(sys.executable).parent / "task-api"
    port = free_port()
    return Server(f"task-api --workers {workers}",
                  [str(task_api), "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", str(workers)],
                  # As users run it: connected as the API's role, under row-level security.
                  server_env(api_role_url(database_url)), port, workdir,
                  workdir / f"ours-{workers}.log")


def start_baseline(database_url: str, workdir: Path, workers: int = 1,
                   table: str = "tasks") -> Server:
    # The same uvicorn settings as `task-api serve` (impl/cli.py): one worker unless asked, loop
    # and HTTP implementation left to uvicorn (uvloop and httptools, from uvicorn[standard]), no
    # access log, proxy headers on, the same graceful-shutdown timeout. `table`: the ceiling's
    # makes it the write ceiling (bench/ceiling.py).
    port = free_port()
    name = "ceiling" if table == ceiling.TABLE else "baseline"
    env = {**server_env(database_url), ceiling.ENV: table}
    server = Server(name if workers == 1 else f"{name} --workers {workers}",
                    [sys.executable, "-m", "uvicorn", "bench.baseline_app:app", "--app-dir",
                     str(REPO), "--host", "127.0.0.1", "--port", str(port), "--workers",
                     str(workers), "--no-access-log", "--log-level", "warning",
                     "--proxy-headers", "--timeout-graceful-shutdown", "20"],
                    env, port, workdir, workdir / f"{name}-{workers}.log")
    server.table = table
    return server


# --- equivalence check ----------------------------------------------------------------------------


def http(method: str, url: str, token: str | None, body: Any = None) -> tuple[int, dict[str, str],
                                                                             Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, \
                json.loads(response.read() or b"null")  # a 204 has no body
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, \
            json.loads(error.read() or b"null")


VOLATILE = {"id", "created_at", "updated_at", "completed_at"}


def check_equivalence(ours: Server, baseline: Server, token: str, writer_token: str,
                      task_id: str, ceiling_server: Server | None = None) -> list[str]:
    """Same requests to both servers; the answers must agree (data, statuses, envelope keys,
    ETag, Location), or the comparison would not be of the same work. The ceiling too, for the
    writes it serves: the same task created, patched and deleted."""
    problems = []

    def compare(label: str, method: str, path: str, who: str | None, body: Any = None,
                volatile: bool = False) -> None:
        a = http(method, ours.url + path, who, body)
        b = http(method, baseline.url + path, who, body)
        if a[0] != b[0]:
            problems.append(f"{label}: status {a[0]} (ours) vs {b[0]} (baseline)")
            return
        if a[0] >= 400:
            return
        data_a, data_b = a[2]["data"], b[2]["data"]
        if volatile:
            data_a = {k: v for k, v in data_a.items() if k not in VOLATILE}
            data_b = {k: v for k, v in data_b.items() if k not in VOLATILE}
        if data_a != data_b:
            problems.append(f"{label}: data differs")
        if set(a[2]["meta"]) != set(b[2]["meta"]):
            problems.append(f"{label}: meta keys {sorted(a[2]['meta'])} vs {sorted(b[2]['meta'])}")
        for key in ("total", "limit"):
            if a[2]["meta"].get(key) != b[2]["meta"].get(key):
                problems.append(f"{label}: meta.{key} differs")
        if (a[2]["meta"].get("next_cursor") is None) != (b[2]["meta"].get("next_cursor") is None):
            problems.append(f"{label}: next_cursor present in one answer only")
        for header in ("etag", "location", "x-request-id", "content-type"):
            if (header in a[1]) != (header in b[1]):
                problems.append(f"{label}: header {header} in one answer only")
        if "etag" in a[1] and not volatile and a[1]["etag"] != b[1].get("etag"):
            problems.append(f"{label}: ETag differs")

    body = {"title": "Equivalence check", "description": "same body to both", "priority": "high",
            "due_date": "2030-06-01T09:30:00+02:00", "tags": ["bench", "bench", "load"]}
    compare("list", "GET", "/api/tasks?limit=20", token)
    compare("list pending", "GET", "/api/tasks?limit=20&status=pending", token)
    compare("get", "GET", f"/api/tasks/{task_id}", token)
    compare("get missing", "GET", f"/api/tasks/{uuid.uuid4()}", token)
    compare("get without token", "GET", f"/api/tasks/{task_id}", None)
    compare("post", "POST", "/api/tasks", writer_token, body, volatile=True)
    compare("post blank title", "POST", "/api/tasks", writer_token, {"title": "  "})
    compare("post unknown field", "POST", "/api/tasks", writer_token, {"title": "x", "owner": 1})
    compare("post bad date", "POST", "/api/tasks", writer_token,
            {"title": "x", "due_date": "2030-02-30T00:00:00Z"})
    compare("post bad priority", "POST", "/api/tasks", writer_token,
            {"title": "x", "priority": "urgent"})
    compare("patch null title", "PATCH", f"/api/tasks/{task_id}", token, {"title": None})
    compare("patch foreign", "PATCH", f"/api/tasks/{task_id}", writer_token, {"completed": True})
    # Two PATCHes in a row: versions advance by one each, so compare the second to the first.
    status_a, _, first = http("PATCH", ours.url + f"/api/tasks/{task_id}", token,
                                      {"completed": True})
    status_b, headers_b, second = http("PATCH", baseline.url + f"/api/tasks/{task_id}", token,
                                       {"completed": True})
    if (status_a, status_b) != (200, 200):
        problems.append(f"patch: statuses {status_a}, {status_b}")
    else:
        a = {k: v for k, v in first["data"].items() if k not in VOLATILE | {"version"}}
        b = {k: v for k, v in second["data"].items() if k not in VOLATILE | {"version"}}
        if a != b or second["data"]["version"] != first["data"]["version"] + 1:
            problems.append("patch: data differs")
        if headers_b.get("etag") != f'"{second["data"]["version"]}"':
            problems.append("patch: baseline ETag is not the new version")
    for server in (ours, baseline):
        created = http("POST", server.url + "/api/tasks", writer_token, body)[2]["data"]["id"]
        statuses = [http("DELETE", server.url + f"/api/tasks/{created}", who)[0]
                    for who in (token, writer_token, writer_token)]
        if statuses != [403, 204, 404]:
            problems.append(f"delete on {server.name}: foreign, own, again: {statuses}")
    if ceiling_server is not None:
        problems += _check_ceiling(ours, ceiling_server, writer_token, body)
    return problems


def _check_ceiling(ours: Server, ceiling_server: Server, writer_token: str,
                   body: dict[str, Any]) -> list[str]:
    """The ceiling creates, patches and deletes the same task as ours (bench/ceiling.py)."""
    problems = []
    answers = []
    for server in (ours, ceiling_server):
        status, headers, created = http("POST", server.url + "/api/tasks", writer_token, body)
        task = created["data"]
        patched = http("PATCH", server.url + f"/api/tasks/{task['id']}", writer_token,
                       {"completed": True, "title": "patched"})
        deleted = http("DELETE", server.url + f"/api/tasks/{task['id']}", writer_token)[0]
        answers.append((status, "location" in headers, patched[0], deleted,
                        {k: v for k, v in task.items() if k not in VOLATILE},
                        {k: v for k, v in patched[2]["data"].items() if k not in VOLATILE}))
    if answers[0] != answers[1]:
        problems.append(f"ceiling: create, patch, delete differ from ours: {answers}")
    return problems


# --- measurement ----------------------------------------------------------------------------------

ENDPOINTS = (
    Load("GET /api/tasks?limit=20", path="/api/tasks?limit=20"),
    Load("GET /api/tasks/{id}", lua_mode="get"),
    Load("POST /api/tasks", lua_mode="post"),
    Load("PATCH /api/tasks/{id}", lua_mode="patch"),
    Load("DELETE /api/tasks/{id}", lua_mode="delete"),
)
WRITES = ("post", "patch", "delete")


@dataclass
class Config:
    duration: float
    rounds: int
    warmup: float
    scale_seconds: float
    scale_rounds: int
    sizes: tuple[int, ...]
    out: Path
    quick: bool
    others: int = OTHER_USERS
    matrix_rounds: int = 5
    matrix_requests: int = 100
    parts: tuple[str, ...] = ("endpoints", "scale", "matrix", "workers")


class Bench:
    def __init__(self, config: Config, database_url: str, ids_file: Path,
                 postmaster: int) -> None:
        self.config = config
        self.database_url = database_url
        self.ids_file = ids_file
        self.postmaster = postmaster
        self.runs = 0
        self.token = mint_hs256(SECRET, BENCH_USER, 4 * 3600)
        self.writer_token = mint_hs256(SECRET, WRITER_USER, 4 * 3600)
        self.failures: list[str] = []

    def token_for(self, load: Load) -> str:
        return self.writer_token if load.lua_mode == "post" else self.token

    def measure(self, server: Server, load: Load, seconds: float, token: str | None = None,
                connections: int = CONNECTIONS, threads: int = THREADS,
                warmup: bool = False) -> WrkResult:
        self.runs += 1
        ids_file, deleter, victims = self.ids_file, None, 0
        if load.lua_mode == "delete":  # tasks of their own, in the table the server writes
            deleter = deleter_user(self.runs)
            victims = max(2000, round(DELETES_PER_SECOND * seconds))
            ids = asyncio.run(load_victims(self.database_url, server.table, deleter, victims,
                                           self.runs))
            ids_file = ids_file.with_name("delete-ids.txt")
            ids_file.write_text("\n".join(ids) + "\n")
            token = mint_hs256(SECRET, deleter, 3600)
        before = cpu_share.snapshot(server.process.pid, self.postmaster)
        result = run_wrk(server.url, load, token or self.token_for(load), seconds, ids_file,
                         threads=threads, connections=connections)
        result.cpu = cpu_share.share(before, cpu_share.snapshot(server.process.pid,
                                                                self.postmaster), result.requests)
        label = f"{'warm-up ' if warmup else ''}{server.name}: {load.name}"
        problems = []
        if result.failed:
            problems.append(f"{label}: {result.non_2xx} non-2xx responses, "
                            f"{result.socket_errors} socket errors of {result.requests} requests")
        if load.lua_mode in WRITES:
            left = asyncio.run(reset_writes(self.database_url, deleter))
            if deleter and victims - left < result.requests:
                problems.append(f"{label}: {victims - left} tasks deleted for "
                                f"{result.requests} requests")
        for message in problems:
            self.failures.append(message)
            banner(message)
        return result

    def compare(self, a: Server, b: Server, load: Load) -> tuple[list[WrkResult],
                                                                 list[WrkResult]]:
        runs_a, runs_b = self.compare_all([a, b], load)
        return runs_a, runs_b

    def compare_all(self, servers: list[Server], load: Load) -> list[list[WrkResult]]:
        """Warm each up, then a, b, (c), then backwards, ... for the configured rounds: the order
        flips every round, so that no server always runs first, or always right after another's
        writes (a drift of the machine's load or of the database over the runs would otherwise
        favour one of them)."""
        config = self.config
        for server in servers:
            self.measure(server, load, config.warmup, warmup=True)
        runs: list[list[WrkResult]] = [[] for _ in servers]
        for round_number in range(1, config.rounds + 1):
            order = list(zip(servers, runs, strict=True))
            for server, server_runs in order if round_number % 2 else order[::-1]:
                result = self.measure(server, load, config.duration)
                server_runs.append(result)
                cpu = result.cpu
                say(f"  round {round_number}  {server.name:<22} {result.rps:9.1f} req/s   "
                    f"p50 {result.p50:7.2f} ms   p99 {result.p99:7.2f} ms   CPU us/req server "
                    f"{cpu['server_us_per_request']:.0f}, PostgreSQL "
                    f"{cpu['postgres_us_per_request']:.0f}, wrk {cpu['wrk_us_per_request']:.0f}"
                    f", idle {cpu['idle_share']:.0%}, other work {cpu['other_share']:.0%}"
                    + (f"   ERRORS {result.non_2xx}+{result.socket_errors}"
                       if result.failed else ""))
        return runs


def median_of(runs: list[WrkResult]) -> dict[str, Any]:
    return {
        "rps": round(statistics.median(r.rps for r in runs), 1),
        "p50_ms": round(statistics.median(r.p50 for r in runs), 3),
        "p99_ms": round(statistics.median(r.p99 for r in runs), 3),
        "cpu": {key: round(statistics.median(r.cpu[key] for r in runs), 3)
                for key in runs[0].cpu},
        "runs": [r.brief() for r in runs],
    }


def round_ratios(a: list[WrkResult], b: list[WrkResult]) -> list[float]:
    """Each round's a / b (runs seconds apart): how noisy the ratio of the medians is."""
    return [round(x.rps / y.rps, 2) if y.rps else 0.0 for x, y in zip(a, b, strict=True)]


def run(config: Config) -> int:
    ensure_wrk()
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True,
                                 check=False).stdout.split(" Copyright")[0].strip()
    from impl.platform.embedded import pgserver_module

    pgserver = pgserver_module()

    started = time.monotonic()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "command": " ".join([".venv/bin/python scripts/bench.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "wrk": wrk_version,
                    "load_average_at_start": round(os.getloadavg()[0], 2)},
        "settings": {"duration_s": config.duration, "rounds": config.rounds,
                     "warmup_s": config.warmup, "threads": THREADS, "connections": CONNECTIONS,
                     "quick": config.quick},
    }
    with tempfile.TemporaryDirectory(prefix="task-api-bench-") as tmp:
        workdir = Path(tmp)
        say(f"bench: starting PostgreSQL in {workdir}/pg ...")
        pg = pgserver.get_server(workdir / "pg", cleanup_mode="delete")
        servers: list[Server] = []
        try:
            url = pg.get_uri()
            upgrade(url)
            say(f"bench: loading tasks: bench user {BENCH_TASKS}, scale users "
                f"{', '.join(f'{s:,}' for s in config.sizes)} ...")
            loaded = asyncio.run(load_data(url, config.sizes, config.others))
            results["machine"]["postgres"] = loaded["postgres"]
            say(f"bench: {loaded['rows']:,} tasks loaded (PostgreSQL {loaded['postgres']})")
            ids_file = workdir / "ids.txt"
            ids_file.write_text("\n".join(loaded["ids"]) + "\n")
            asyncio.run(create_ceiling(url))
            bench = Bench(config, url, ids_file, cpu_share.postmaster_pid(workdir / "pg"))

            ours = start_ours(url, 1, workdir)
            baseline = start_baseline(url, workdir)
            ceiling_server = start_baseline(url, workdir, table=ceiling.TABLE)
            servers += [ours, baseline, ceiling_server]
            for server in servers:
                server.wait_ready()
            ours.name = "ours (task-api serve)"
            problems = check_equivalence(ours, baseline, bench.token, bench.writer_token,
                                         loaded["ids"][0], ceiling_server)
            asyncio.run(reset_writes(url))
            if problems:
                banner("the baseline does not answer like the API; figures would compare "
                       "different work:\n" + "\n".join(f"    {p}" for p in problems))
                return 1
            say("bench: baseline and API give the same answers (data, statuses, envelope, "
                "headers)\n")

            if "endpoints" in config.parts:
                results["endpoints"] = measure_endpoints(bench, ours, baseline, ceiling_server)

            if "scale" in config.parts:
                say(f"\nScale: first page (limit=20), wrk -t1 -c1 (sequential requests), median "
                    f"of {config.scale_rounds} x {config.scale_seconds:g} s per point, round-robin")
                results["scale"] = measure_scale(bench, ours, baseline)
                results["scale_sql"] = asyncio.run(sql_timings(url, config.sizes, 300))

            if "matrix" in config.parts:
                say(f"\nMatrix: every list query shape, first and next page, "
                    f"{config.matrix_requests} requests per point and round, a shape-page's "
                    "sizes in turn")
                users = {size: (scale_user(size), mint_hs256(SECRET, scale_user(size), 4 * 3600))
                         for size in config.sizes}
                results["matrix"] = asyncio.run(bench_matrix.measure(
                    url, ours.url, baseline.url, users, loaded["now"], config.matrix_rounds,
                    config.matrix_requests, say,
                ))

            if "workers" in config.parts:
                ceiling_server.stop()  # idle, but one server fewer on the machine
                servers.remove(ceiling_server)
                results["workers"] = measure_workers(bench, ours, baseline, url, workdir,
                                                     servers)
        finally:
            for server in servers:
                server.stop()
            pg.cleanup()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["machine"]["load_average_at_end"] = round(os.getloadavg()[0], 2)
    results["failures"] = bench.failures
    report(results, config)
    if bench.failures:
        banner(f"{len(bench.failures)} run(s) had failed requests: the figures above are not "
               "trustworthy\n" + "\n".join(f"    {f}" for f in bench.failures))
        return 1
    return 0


def measure_endpoints(bench: Bench, ours: Server, baseline: Server,
                      ceiling_server: Server) -> list[dict[str, Any]]:
    """Each endpoint on ours and the baseline; each write also on the ceiling (the baseline on a
    table that keeps nothing but the rows, bench/ceiling.py), in the same rounds."""
    config = bench.config
    endpoints = []
    for load in ENDPOINTS:
        say(f"{load.name}  (wrk -t{THREADS} -c{CONNECTIONS}, {config.rounds} x "
            f"{config.duration:g} s each, after {config.warmup:g} s warm-up)")
        writes = load.lua_mode in WRITES
        runs = bench.compare_all([ours, baseline, *([ceiling_server] if writes else [])], load)
        a, b = median_of(runs[0]), median_of(runs[1])
        row: dict[str, Any] = {
            "endpoint": load.name, "ours": a, "baseline": b,
            "rps_ratio": round(a["rps"] / b["rps"], 3) if b["rps"] else None,
            "p99_ratio": round(a["p99_ms"] / b["p99_ms"], 3) if b["p99_ms"] else None,
            "round_ratios": round_ratios(runs[0], runs[1]),
        }
        if writes:
            c = median_of(runs[2])
            row.update(ceiling=c, ceiling_ratio=round(a["rps"] / c["rps"], 3),
                       ceiling_round_ratios=round_ratios(runs[0], runs[2]))
        endpoints.append(row)
    return endpoints


def measure_workers(bench: Bench, ours: Server, baseline: Server, url: str, workdir: Path,
                    servers: list[Server]) -> dict[str, Any]:
    """The list's throughput with one and two worker processes, ours and the baseline's, all
    four in the same rounds, with where each run's CPU went (bench/cpu_share.py)."""
    say("\nWorkers: GET /api/tasks?limit=20, task-api serve and the baseline with --workers 1 "
        "and 2")
    two = start_ours(url, 2, workdir)
    base_two = start_baseline(url, workdir, workers=2)
    servers += [two, base_two]
    two.wait_ready()
    base_two.wait_ready()
    ours.name, two.name = "ours --workers 1", "ours --workers 2"
    baseline.name = "baseline --workers 1"
    runs = bench.compare_all([ours, two, baseline, base_two], ENDPOINTS[0])
    names = ("1", "2", "baseline_1", "baseline_2")
    out: dict[str, Any] = {name: median_of(r) for name, r in zip(names, runs, strict=True)}
    out["round_ratios"] = {"ours_2_over_1": round_ratios(runs[1], runs[0]),
                           "baseline_2_over_1": round_ratios(runs[3], runs[2]),
                           "ours_over_baseline_2": round_ratios(runs[1], runs[3])}
    return out


def measure_scale(bench: Bench, ours: Server, baseline: Server) -> list[dict[str, Any]]:
    """wrk with one connection: each request waits for the previous answer, so its latency is
    the server's time for one request plus loopback, sampled thousands of times per point (a
    Python client loop would add its own overhead and GC pauses to every sample). The points are
    measured round-robin, several times each, and the median taken, so that a burst of load
    from elsewhere on the machine does not land on one point of the curve."""
    config = bench.config
    points: dict[tuple[int, str], dict[str, Any]] = {}
    runs: dict[tuple[int, str, str], list[WrkResult]] = {}
    tokens = {size: mint_hs256(SECRET, scale_user(size), 4 * 3600) for size in config.sizes}

    def load_for(size: int, status: str) -> Load:
        query = "limit=20" if status == "all" else "limit=20&status=pending"
        return Load(f"{size:,} tasks, {status}", path=f"/api/tasks?{query}")

    for server in (ours, baseline):
        for size in config.sizes:
            for status in ("all", "pending"):
                bench.measure(server, load_for(size, status), 1, token=tokens[size],
                              connections=1, threads=1, warmup=True)
    for _ in range(config.scale_rounds):
        for size in config.sizes:
            for status in ("all", "pending"):
                for server, key in ((ours, "ours"), (baseline, "baseline")):
                    result = bench.measure(server, load_for(size, status), config.scale_seconds,
                                           token=tokens[size], connections=1, threads=1)
                    runs.setdefault((size, status, key), []).append(result)
    for size in config.sizes:
        for status in ("all", "pending"):
            point: dict[str, Any] = {"tasks": size, "status": status}
            for key in ("ours", "baseline"):
                point[key] = median_of(runs[(size, status, key)])
            points[(size, status)] = point
            say(f"  {size:>7,} tasks  {status:<8} ours p50 {point['ours']['p50_ms']:6.2f} ms "
                f"p99 {point['ours']['p99_ms']:6.2f} ms   baseline p50 "
                f"{point['baseline']['p50_ms']:6.2f} ms p99 {point['baseline']['p99_ms']:6.2f} ms")
    return list(points.values())


# --- report ---------------------------------------------------------------------------------------


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(results: dict[str, Any], config: Config) -> None:
    lines = [f"Benchmark run {results['date']} — `{results['command']}`", ""]
    machine = results["machine"]
    lines.append(f"{machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}, "
                 f"PostgreSQL {machine.get('postgres')}, {machine['wrk']}; 1-minute load "
                 f"average {machine['load_average_at_start']} at the start, "
                 f"{machine['load_average_at_end']} at the end (other work on the machine); "
                 f"wrk -t{THREADS} -c{CONNECTIONS}, median of {config.rounds} x "
                 f"{config.duration:g} s runs per server, alternating.")
    if "endpoints" in results:
        lines += ["", *endpoint_table(results["endpoints"])]
    if "scale" in results:
        lines += ["", *scale_table(results, config)]
    if "matrix" in results:
        lines += ["", *matrix_table(results, config)]
    if "workers" in results:
        lines += ["", *workers_table(results["workers"])]
    if results["failures"]:
        lines += ["", "**Failed requests during the run:**", "",
                  *(f"- {f}" for f in results["failures"])]
    table = "\n".join(lines) + "\n"
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "latest.md").write_text(table)
    (config.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    if "scale" in results:
        draw_scale(results, config)
    if "matrix" in results:
        draw_matrix(results, config)
    say("\n" + "=" * 78 + "\n" + table + "=" * 78)
    plots = [f"{part}.png" for part in ("scale", "matrix") if part in results]
    say(f"written: {config.out}/{', '.join(['latest.md', 'latest.json', *plots])} "
        f"(run took {results['elapsed_s']:.0f} s)")


def scale_table(results: dict[str, Any], config: Config) -> list[str]:
    lines = [("First page (limit=20) latency by the user's task count, one connection "
              "(p50 / p99 ms); SQL: the list statement alone, from Python (and what a "
              "count(*) of the rows would add):"), "",
             ("| tasks | default: ours | default: baseline | default: SQL | pending: ours "
              "| pending: baseline | pending: SQL |"), "|---:|---:|---:|---:|---:|---:|---:|"]
    by_point = {(p["tasks"], p["status"]): p for p in results["scale"]}
    sql = results["scale_sql"]
    for size in config.sizes:
        cells = []
        for status in ("all", "pending"):
            p = by_point[(size, status)]
            s = sql[f"{size}:{status}"]
            cells += [f"{p['ours']['p50_ms']:.2f} / {p['ours']['p99_ms']:.2f}",
                      f"{p['baseline']['p50_ms']:.2f} / {p['baseline']['p99_ms']:.2f}",
                      f"{s['list_ms']:.2f} (count(*) {s['count_star_ms']:.2f})"]
        lines.append(f"| {size:,} | " + " | ".join(cells) + " |")
    smallest, largest = config.sizes[0], config.sizes[-1]
    growth = {}
    for status in ("all", "pending"):
        ratio = (by_point[(largest, status)]["ours"]["p50_ms"]
                 / by_point[(smallest, status)]["ours"]["p50_ms"])
        growth[status] = round(ratio, 2)
    results["scale_growth_p50"] = growth
    lines += ["", (f"p50 growth from {smallest:,} to {largest:,} tasks (target <= 1.5x): "
                   f"default {growth['all']:.2f}x {_mark(growth['all'] <= 1.5)}, pending "
                   f"{growth['pending']:.2f}x {_mark(growth['pending'] <= 1.5)}")]
    return lines


def _cpu(cpu: dict[str, float]) -> str:
    return (f"{cpu['server_us_per_request']:.0f} / {cpu['postgres_us_per_request']:.0f} / "
            f"{cpu['wrk_us_per_request']:.0f} / {cpu['idle_share']:.0%} / "
            f"{cpu['other_share']:.0%}")


def endpoint_table(endpoints: list[dict[str, Any]]) -> list[str]:
    lines = [("| endpoint | ours req/s | baseline req/s | ratio (>= 0.7) "
              "| ours p50 / p99 ms | baseline p50 / p99 ms | p99 ratio (<= 2) |"),
             "|---|---:|---:|---:|---:|---:|---:|"]
    for e in endpoints:
        a, b = e["ours"], e["baseline"]
        lines.append(
            f"| `{e['endpoint']}` | {a['rps']:,.0f} | {b['rps']:,.0f} | {e['rps_ratio']:.2f} "
            f"{_mark(e['rps_ratio'] >= 0.7)} | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} | "
            f"{b['p50_ms']:.2f} / {b['p99_ms']:.2f} | {e['p99_ratio']:.2f} "
            f"{_mark(e['p99_ratio'] <= 2)} |")
    writes = [e for e in endpoints if "ceiling" in e]
    if writes:
        lines += ["", ("The write ceiling: the baseline writing the same rows to a table with "
                       "only a primary key and a (user_id, created_at) index (bench/ceiling.py), "
                       "in the same rounds. Ratio: ours / ceiling, of the medians (each round's "
                       "in brackets). CPU per request, us: server / PostgreSQL / wrk, then the "
                       "shares of the machine's CPUs idle / taken by other work (medians of "
                       "the runs)."), "",
                  ("| endpoint | ours req/s | ceiling req/s | ours / ceiling (>= 0.75) "
                   "| per round | ours CPU | ceiling CPU |"),
                  "|---|---:|---:|---:|---|---:|---:|"]
        for e in writes:
            a, c = e["ours"], e["ceiling"]
            lines.append(
                f"| `{e['endpoint']}` | {a['rps']:,.0f} | {c['rps']:,.0f} | "
                f"{e['ceiling_ratio']:.2f} {_mark(e['ceiling_ratio'] >= 0.75)} | "
                f"{' / '.join(f'{r:.2f}' for r in e['ceiling_round_ratios'])} | "
                f"{_cpu(a['cpu'])} | {_cpu(c['cpu'])} |")
    return lines


def workers_table(workers: dict[str, Any]) -> list[str]:
    rows = (("`task-api serve --workers 1`", "1"), ("`task-api serve --workers 2`", "2"),
            ("baseline `--workers 1`", "baseline_1"), ("baseline `--workers 2`", "baseline_2"))
    lines = [("`GET /api/tasks?limit=20` with one and two worker processes, in the same rounds; "
              "CPU per request, us: server / PostgreSQL / wrk, then the shares of the machine's "
              "CPUs idle / taken by other work:"), "",
             "| server | req/s | p50 / p99 ms | CPU per request |", "|---|---:|---:|---:|"]
    for label, key in rows:
        w = workers[key]
        lines.append(f"| {label} | {w['rps']:,.0f} | {w['p50_ms']:.2f} / {w['p99_ms']:.2f} | "
                     f"{_cpu(w['cpu'])} |")
    ratios = workers["round_ratios"]
    lines += ["", (f"Two workers / one: ours {workers['2']['rps'] / workers['1']['rps']:.2f}x "
                   f"(rounds {' / '.join(map(str, ratios['ours_2_over_1']))}), baseline "
                   f"{workers['baseline_2']['rps'] / workers['baseline_1']['rps']:.2f}x "
                   f"({' / '.join(map(str, ratios['baseline_2_over_1']))}); ours / baseline, "
                   f"two workers each: {workers['2']['rps'] / workers['baseline_2']['rps']:.2f} "
                   f"({' / '.join(map(str, ratios['ours_over_baseline_2']))}).")]
    lines += ["", *workers_bound(workers)]
    return lines


def workers_bound(workers: dict[str, Any]) -> list[str]:
    """What the CPU a request costs allows on this machine: one worker process can use one CPU,
    two can use them all, but PostgreSQL and wrk need theirs too; so the most a second worker
    can add is min(2 CPUs / everything, ...) over min(1 CPU / server, 2 CPUs / everything)."""
    cpus = os.cpu_count() or 1
    lines = []
    for label, key, key_two in (("ours", "1", "2"), ("baseline", "baseline_1", "baseline_2")):
        cpu = workers[key]["cpu"]
        measured = workers[key_two]["rps"] / workers[key]["rps"]
        server = cpu["server_us_per_request"]
        total = server + cpu["postgres_us_per_request"] + cpu["wrk_us_per_request"]
        one = min(1e6 / server, cpus * 1e6 / total)
        two = cpus * 1e6 / total
        lines.append(
            f"{label}: a request costs {server:.0f} us of the server, {total - server:.0f} of "
            f"PostgreSQL and wrk; on {cpus} CPUs with nothing else running that allows "
            f"{one:,.0f} req/s with one worker (a process uses one CPU) and {two:,.0f} with "
            f"two: at most {two / one:.2f}x. Measured {measured:.2f}x, with "
            f"{cpu['other_share']:.0%} of the CPUs taken by other work.")
    return lines


def matrix_table(results: dict[str, Any], config: Config) -> list[str]:
    rows = results["matrix"]
    sizes = config.sizes
    by_key: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    pairs: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for row in rows:
        target = pairs if bench_matrix.paired(row) else by_key
        target.setdefault((row["shape"], row["page"]), {})[row["tasks"]] = row
    growth = bench_matrix.growth(rows)
    growth_sql = bench_matrix.growth(rows, "sql")
    equal = bench_matrix.equal_growth(rows)
    # From 1,000 tasks on, the pages compared are full, unless the rows column says otherwise
    # (a next page that holds the 21st match alone).
    growth_full = bench_matrix.growth(rows, since=sizes[1]) if len(sizes) > 2 else {}
    results["matrix_growth_p50"] = {f"{shape} [{page}]": g for (shape, page), g in growth.items()}
    results["matrix_equal_growth_p50"] = {
        f"{shape} [{page}]": g for (shape, page), g in equal.items()
    }
    worst, worst_literal = max(equal.values()), max(growth.values())
    within = sum(g <= 1.5 for g in growth.values())
    lines = [
        (f"Every list query shape (limit=20), p50 ms over keep-alive connections: ours, and in "
         f"parentheses the list statement alone; median of {config.matrix_rounds} rounds of "
         f"{config.matrix_requests} requests, one at a time, a shape-page's sizes in turn (each "
         f"growth compares latencies taken in the same moments). \"next\" is the page after the first "
         f"(its cursor). Rows: the tasks on the page at the smallest size measured and at "
         f"{sizes[-1]:,}. Growth at equal answers (target <= 1.5x): p50 at {sizes[-1]:,} tasks "
         f"over p50 at {sizes[0]:,}, with limit=20 where both pages hold as many tasks; where "
         f"the smaller page holds fewer (k), of the same request with limit=k at both sizes "
         f"(p50 ms and the statement alone in parentheses), so that both answers hold k tasks. Limit=20 growth: of the "
         f"columns as shown, answers of different sizes where the rows differ; from "
         f"{sizes[1]:,}: the limit=20 growth from there."), "",
        "| shape | page | " + " | ".join(f"{size:,}" for size in sizes)
        + " | rows | growth at equal answers | limit=20 growth | SQL growth"
        + f" | from {sizes[1]:,} |",
        "|---|---|" + "---:|" * len(sizes) + "---:|---:|---:|---:|---:|",
    ]
    for (shape, page), points in by_key.items():
        cells = [f"{points[size]['ours']['p50_ms']:.2f} ({points[size]['sql_ms']:.2f})"
                 if size in points else "" for size in sizes]
        g = growth.get((shape, page), 0.0)
        e = equal.get((shape, page), 0.0)
        ends = [points[size].get("rows") for size in (min(points), max(points))]
        full = growth_full.get((shape, page))
        pair = pairs.get((shape, page))
        how = ""
        if pair:
            low, high = pair[min(pair)], pair[max(pair)]
            how = (f" (limit={low['limit']}: {low['ours']['p50_ms']:.2f} ({low['sql_ms']:.2f}) "
                   f"-> {high['ours']['p50_ms']:.2f} ({high['sql_ms']:.2f}))")
        lines.append(f"| `{shape}` | {page} | " + " | ".join(cells) + " | "
                     + " / ".join("" if n is None else str(n) for n in ends)
                     + f" | {e:.2f} {_mark(e <= 1.5)}{how} | {g:.2f} | "
                     + f"{growth_sql.get((shape, page), 0):.2f} | "
                     + f"{'' if full is None else f'{full:.2f}'} |")
    baseline = [row for row in rows if "baseline" in row]
    if baseline:
        lines += ["", "The same first pages on the baseline (it serves only these shapes), p50 ms:",
                  "", "| shape | " + " | ".join(f"{size:,}" for size in sizes) + " | growth |",
                  "|---|" + "---:|" * len(sizes) + "---:|"]
        base_growth = bench_matrix.growth(rows, "baseline")
        for (shape, page), points in by_key.items():
            if page == "first" and all("baseline" in points.get(s, {}) for s in sizes):
                cells = [f"{points[size]['baseline']['p50_ms']:.2f}" for size in sizes]
                lines.append(f"| `{shape}` | " + " | ".join(cells)
                             + f" | {base_growth[(shape, page)]:.2f} |")
    lines += ["", (f"Largest growth at equal answers: {worst:.2f}x {_mark(worst <= 1.5)} "
                   f"({sum(g <= 1.5 for g in equal.values())} of {len(equal)} shape-pages "
                   f"within 1.5x). With limit=20 at every size: {within} of {len(growth)} "
                   f"within 1.5x, largest {worst_literal:.2f}x.")]
    return lines


def draw_matrix(results: dict[str, Any], config: Config) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    equal = bench_matrix.equal_growth(results["matrix"])
    literal = bench_matrix.growth(results["matrix"])
    shapes = list(dict.fromkeys(shape for shape, _ in equal))
    figure, axes = plt.subplots(figsize=(9, 0.28 * len(shapes) + 1.6), dpi=110)
    for offset, page, color in ((-0.2, "first", "tab:blue"), (0.2, "next", "tab:orange")):
        keys = [(i, (shape, page)) for i, shape in enumerate(shapes) if (shape, page) in equal]
        axes.barh([i + offset for i, _ in keys], [equal[key] for _, key in keys], height=0.38,
                  color=color, label=f"{page} page, equal answers")
        axes.scatter([literal[key] for _, key in keys], [i + offset for i, _ in keys],
                     marker="|", color="black", s=40, zorder=3,
                     label="limit=20 at both sizes" if page == "first" else None)
    axes.axvline(1.5, color="tab:red", linestyle="--", label="target 1.5x")
    axes.axvline(1.0, color="grey", linewidth=0.8)
    axes.set_yticks(range(len(shapes)))
    axes.set_yticklabels(shapes, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel(f"p50 at {config.sizes[-1]:,} tasks / p50 at {config.sizes[0]:,}")
    axes.set_title(f"Growth of every list query shape ({results['date'][:10]})", fontsize=10)
    axes.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(config.out / "matrix.png")
    plt.close(figure)


def draw_scale(results: dict[str, Any], config: Config) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    styles = {("ours", "all"): ("tab:blue", "-", "ours: default list"),
              ("ours", "pending"): ("tab:orange", "-", "ours: status=pending"),
              ("baseline", "all"): ("tab:blue", ":", "baseline: default list"),
              ("baseline", "pending"): ("tab:orange", ":", "baseline: status=pending")}
    for (server, status), (color, line, label) in styles.items():
        points = [p for p in results["scale"] if p["status"] == status]
        axes.plot([p["tasks"] for p in points], [p[server]["p50_ms"] for p in points],
                  color=color, linestyle=line, marker="o", label=label)
    axes.set_xscale("log")
    axes.set_xlabel("tasks of the user (log scale)")
    axes.set_ylabel("first page latency, p50 (ms)")
    axes.set_ylim(bottom=0)
    axes.set_title(f"GET /api/tasks?limit=20, one connection ({results['date'][:10]})")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(config.out / "scale.png")
    plt.close(figure)


def check_only() -> int:
    """The equivalence check alone, on the bench user's tasks only (2,000): both servers, the
    same requests, the same answers; no wrk, no figures. The test command runs it
    (tests/bench/test_bench_equivalence.py), so a drift of the baseline shows up in CI, not at the
    next benchmark."""
    from impl.platform.embedded import pgserver_module

    pgserver = pgserver_module()

    with tempfile.TemporaryDirectory(prefix="task-api-bench-check-") as tmp:
        workdir = Path(tmp)
        pg = pgserver.get_server(workdir / "pg", cleanup_mode="delete")
        servers: list[Server] = []
        try:
            url = pg.get_uri()
            upgrade(url)
            loaded = asyncio.run(load_data(url, (), 0))
            asyncio.run(create_ceiling(url))
            ours = start_ours(url, 1, workdir)
            baseline = start_baseline(url, workdir)
            ceiling_server = start_baseline(url, workdir, table=ceiling.TABLE)
            servers += [ours, baseline, ceiling_server]
            for server in servers:
                server.wait_ready()
            token = mint_hs256(SECRET, BENCH_USER, 3600)
            writer_token = mint_hs256(SECRET, WRITER_USER, 3600)
            problems = check_equivalence(ours, baseline, token, writer_token, loaded["ids"][0],
                                         ceiling_server)
        finally:
            for server in servers:
                server.stop()
            pg.cleanup()
    if problems:
        say("bench --check-only: the baseline does not answer like the API:\n"
            + "\n".join(f"    {p}" for p in problems))
        return 1
    say("bench --check-only: baseline and API give the same answers")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per measured wrk run (default 10, 3 with --quick)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="measured runs per server and endpoint, alternating (default 2, "
                             "1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: short runs, scale up to 10k tasks, under 2 minutes")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write latest.json, latest.md and scale.png (default "
                             "docs/perf, artifacts/perf with --quick)")
    parser.add_argument("--parts", default="endpoints,scale,matrix,workers",
                        help="which parts to run, comma-separated (default all): endpoints, "
                             "scale, matrix, workers")
    parser.add_argument("--check-only", action="store_true",
                        help="only check that the baseline answers like the API, on 2,000 "
                             "tasks (about 15 s; the test command runs it)")
    args = parser.parse_args()
    if args.check_only:
        return check_only()
    quick = args.quick
    config = Config(
        duration=args.duration or (3 if quick else 10),
        rounds=args.rounds or (1 if quick else 2),
        warmup=1 if quick else 3,
        scale_seconds=1,
        scale_rounds=2 if quick else 5,
        sizes=QUICK_SCALE_SIZES if quick else SCALE_SIZES,
        out=args.out or REPO / ("artifacts/perf" if quick else "docs/perf"),
        quick=quick,
        others=20 if quick else OTHER_USERS,
        matrix_rounds=1 if quick else 5,
        matrix_requests=40 if quick else 100,
        parts=tuple(part.strip() for part in args.parts.split(",")),
    )
    unknown = set(config.parts) - set(Config.parts)
    if unknown:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}")
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
