"""What change tracking (migration 0007) costs each write over HTTP: POST, PATCH and DELETE
/api/tasks requests a second with the code and schema before it and after it, in one run.

    .venv/bin/python scripts/bench_write_tracking.py [--rounds 4] [--duration 8] [--tasks 10000]

BEFORE is commit 33da7d1 (migrations up to 0006, no change feed) or the one `--before` names,
checked out with `git worktree add` in .bench-before-<commit>/ with its own locked environment;
AFTER is this checkout. One private PostgreSQL (pgserver, under artifacts/, deleted at the end)
holds a database for each, migrated by that version's own `task-api migrate`, with the same
tasks for the writing user (bench/data.py, same seed). Each version's `task-api serve --workers 1`
(RATE_LIMIT_PER_SECOND=0, MAX_TASKS_PER_USER=0, LOG_LEVEL=WARNING) runs throughout, on ports
18401 and 18402; AFTER listens for its notifications on the database's own URL, as in
production (checked in pg_stat_activity: LOG_LEVEL=WARNING hides its "listening" line).

wrk as scripts/bench.py runs it (-t2 -c16, bench/requests.lua): POST of new tasks, PATCH of
`completed` rotating over all the writer's tasks, DELETE of tasks loaded for the run (a user of
their own, more tasks than a run can delete; the tasks gone are counted against the 204s).
Every round measures each endpoint on both versions, BEFORE first in odd rounds and AFTER first
in even ones; after each run the written database is put back (new tasks deleted, tombstones
emptied, VACUUM ANALYZE, CHECKPOINT). Prints req/s per version (median of the rounds and the
spread) and AFTER / BEFORE per endpoint (of the medians, and each round's with their median: the two runs
of a round are seconds apart, so a round's ratio is the least moved by other work).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_script import bench_main as load_bench_main
from bench.data import copy_tasks, task_rows
from impl.platform.token_verifier import mint_hs256

# scripts/bench.py's servers, settings and wrk runner.
bench_main = load_bench_main()
Load, say = bench_main.Load, bench_main.say

BEFORE_COMMIT = "33da7d1"  # the default of --before
PORTS = {"before": 18401, "after": 18402}
NAMESPACE = uuid.UUID("5a0c2f7e-8d41-4b9e-a3c6-1e7f0d2b9c84")
WRITER = uuid.uuid5(NAMESPACE, "writer").hex
LOADS = (Load("POST /api/tasks", lua_mode="post"), Load("PATCH /api/tasks/{id}", lua_mode="patch"),
         Load("DELETE /api/tasks/{id}", lua_mode="delete"))
POSTED = "Created by scripts/bench.py"  # the description of requests.lua's POST bodies


@dataclass
class Version:
    name: str
    root: Path
    url: str = ""
    server: Any = None
    runs: dict[str, list[float]] = field(default_factory=dict)

    @property
    def task_api(self) -> str:
        return str(self.root / ".venv" / "bin" / "task-api")


def before_checkout(commit: str) -> Path:
    """.bench-before-<commit>/ at that commit with its own .venv (made once, then reused)."""
    before_dir = REPO / f".bench-before-{commit}"
    if not (before_dir / ".git").exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before_dir),
                        commit], check=True)
    head = subprocess.run(["git", "-C", str(before_dir), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    if not head.startswith(commit):
        sys.exit(f"bench_write_tracking: {before_dir} is at {head}, not {commit}")
    uv = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    subprocess.run([uv, "sync", "--locked", "--quiet"], cwd=before_dir, check=True,
                   env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"})
    return before_dir


def env_for(version: Version) -> dict[str, str]:
    env: dict[str, str] = bench_main.server_env(version.url)
    env.update(RATE_LIMIT_PER_SECOND="0", MAX_TASKS_PER_USER="0", LOG_LEVEL="WARNING")
    return env


async def load(url: str, user: str, count: int, seed: int) -> list[str]:
    """`count` tasks of a new user (the same ones for the same seed); their ids, shuffled."""
    rng = random.Random(seed)
    now = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
    connection = await asyncpg.connect(url)
    try:
        rows = task_rows(user, count, rng, now)
        await copy_tasks(connection, [user], rows)
    finally:
        await connection.close()
    ids = [str(row[0]) for row in rows]
    rng.shuffle(ids)
    return ids


async def put_back(url: str, deleter: str | None) -> int:
    """After a run: the POSTed tasks and the deleter's remaining ones gone, the tombstones (AFTER)
    emptied, the tables vacuumed, what the run dirtied written out. Returns the deleter's tasks
    left before they go."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("DELETE FROM tasks WHERE user_id = $1 AND description = $2",
                                 WRITER, POSTED)
        left = 0
        if deleter:
            left = await connection.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1",
                                             deleter)
            for table in ("tasks", "task_counts", "task_tag_counts"):
                await connection.execute(f"DELETE FROM {table} WHERE user_id = $1", deleter)
        if await connection.fetchval("SELECT to_regclass('task_tombstones') IS NOT NULL"):
            await connection.execute("TRUNCATE task_tombstones")
        await connection.execute("VACUUM ANALYZE")
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()
    return int(left)


async def listener_pid(url: str, timeout: float = 8) -> int | None:
    """The backend of the server's LISTEN connection (its last statement: LISTEN, until the
    first keep-alive 10 s later)."""
    connection = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = await connection.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'LISTEN %task_changes%'")
            if pid:
                return int(pid)
            await asyncio.sleep(0.2)
        return None
    finally:
        await connection.close()


async def backend_alive(url: str, pid: int) -> bool:
    connection = await asyncpg.connect(url)
    try:
        return bool(await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid))
    finally:
        await connection.close()


class Run:
    def __init__(self, args: argparse.Namespace, workdir: Path, patch_ids: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.patch_ids = patch_ids
        self.writer_token = mint_hs256(bench_main.SECRET, WRITER, 4 * 3600)
        self.failures: list[str] = []
        self.runs = 0

    def measure(self, version: Version, load_: Any, seconds: float) -> float:
        """One wrk run against one version, then its database put back. Returns req/s."""
        self.runs += 1
        token, ids_file, deleter, victims = self.writer_token, self.patch_ids, None, 0
        if load_.lua_mode == "delete":
            deleter = uuid.uuid5(NAMESPACE, f"deleter-{self.runs}").hex
            victims = max(2000, round(self.args.deletes_per_second * seconds))
            ids = asyncio.run(load(version.url, deleter, victims, seed=self.runs))
            ids_file = self.workdir / "delete-ids.txt"
            ids_file.write_text("\n".join(ids) + "\n")
            token = mint_hs256(bench_main.SECRET, deleter, 3600)
            asyncio.run(put_back(version.url, None))  # the load vacuumed and checkpointed
        result = bench_main.run_wrk(version.server.url, load_, token, seconds, ids_file)
        left = asyncio.run(put_back(version.url, deleter))
        problems = []
        if result.failed:
            problems.append(f"{result.non_2xx} non-2xx, {result.socket_errors} socket errors "
                            f"of {result.requests} requests")
        if deleter and victims - left < result.requests:
            problems.append(f"{victims - left} tasks deleted for {result.requests} requests")
        if problems:
            message = f"{version.name}: {load_.name}: " + "; ".join(problems)
            self.failures.append(message)
            bench_main.banner(message)
        extra = f"  ({victims - left} of {victims} tasks deleted)" if deleter else ""
        say(f"    {version.name:<6} {load_.name:<24} {result.rps:8.1f} req/s  "
            f"p50 {result.p50:6.2f} ms  p99 {result.p99:6.2f} ms{extra}")
        return float(result.rps)


def start(version: Version, workdir: Path) -> None:
    port = PORTS[version.name]
    version.server = bench_main.Server(
        version.name, [version.task_api, "serve", "--host", "127.0.0.1", "--port", str(port),
                       "--workers", "1"],
        env_for(version), port, version.root, workdir / f"{version.name}.log")
    version.server.wait_ready()


def spread(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}"


def report(versions: dict[str, Version], results: dict[str, Any]) -> list[str]:
    before, after = versions["before"], versions["after"]
    lines = [
        (f"{results['date']}, {results['rounds']} rounds x {results['duration']:g} s per "
         f"endpoint and version (wrk -t{bench_main.THREADS} -c{bench_main.CONNECTIONS}, "
         f"{results['tasks']:,} tasks of the writer), 1-minute load average "
         f"{results['load_start']} at the start, {results['load_end']} at the end"),
        "",
        ("| request | before req/s (rounds) | after req/s (rounds) | after / before "
         "| per round (median) |"),
        "|---|---:|---:|---:|---|",
    ]
    for load_ in LOADS:
        b, a = before.runs[load_.name], after.runs[load_.name]
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        ratio = statistics.median(a) / statistics.median(b)
        results["endpoints"][load_.name] = {
            "before": b, "after": a, "ratio": round(ratio, 3),
            "round_ratios": [round(r, 3) for r in ratios],
            "round_ratio_median": round(statistics.median(ratios), 3)}
        lines.append(
            f"| {load_.name} | {statistics.median(b):,.0f} ({spread(b)}) | "
            f"{statistics.median(a):,.0f} ({spread(a)}) | {ratio:.2f} | "
            + " / ".join(f"{r:.2f}" for r in ratios) + f" ({statistics.median(ratios):.2f}) |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=8, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3, help="seconds, once per endpoint "
                        "and version before the rounds")
    parser.add_argument("--tasks", type=int, default=10_000, help="the writer's tasks")
    parser.add_argument("--deletes-per-second", type=float, default=5000,
                        help="tasks loaded for a DELETE run, per second of it (more than the "
                             "server deletes, or the run fails on 404s)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("--before", default=BEFORE_COMMIT, help="the commit to compare with "
                        "(33da7d1: before change tracking; 81c327d: before recurrence and "
                        "reminders, migration 0008)")
    args = parser.parse_args()
    bench_main.ensure_wrk()
    from impl.platform.embedded import pgserver_module

    pgserver = pgserver_module()
    versions = {"before": Version("before", before_checkout(args.before)), "after": Version("after", REPO)}
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "rounds": args.rounds,
        "duration": args.duration, "tasks": args.tasks, "endpoints": {},
        "load_start": round(os.getloadavg()[0], 2),
    }
    (REPO / "artifacts").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-write-tracking-",
                                     dir=REPO / "artifacts") as tmp:
        workdir = Path(tmp)
        pg = pgserver.get_server(workdir / "pg", cleanup_mode="delete")
        try:
            for version in versions.values():
                pg.psql(f"CREATE DATABASE {version.name}")
                version.url = pg.get_uri(version.name)
                subprocess.run([version.task_api, "migrate"], cwd=version.root,
                               env=env_for(version), check=True)
                head = asyncio.run(_fetch(version.url, "SELECT version_num FROM alembic_version"))
                # The same seed: the same tasks, ids and order in both databases.
                ids = asyncio.run(load(version.url, WRITER, args.tasks, seed=2026))
                say(f"{version.name}: migrated to {head}, {args.tasks:,} tasks of the writer")
                start(version, workdir)
            (workdir / "patch-ids.txt").write_text("\n".join(ids) + "\n")
            pid = asyncio.run(listener_pid(versions["after"].url))
            if pid is None:
                sys.exit("bench_write_tracking: the AFTER server does not LISTEN")
            if asyncio.run(listener_pid(versions["before"].url, timeout=1)):
                sys.exit("bench_write_tracking: the BEFORE server LISTENs?")
            say(f"after: LISTEN task_changes open (backend {pid})")
            run = Run(args, workdir, workdir / "patch-ids.txt")
            say("warm-up")
            for load_ in LOADS:
                for version in versions.values():
                    run.measure(version, load_, args.warmup)
            for number in range(1, args.rounds + 1):
                say(f"round {number}, load average {os.getloadavg()[0]:.2f}")
                order = list(versions.values())
                for load_ in LOADS:
                    for version in order if number % 2 else order[::-1]:
                        version.runs.setdefault(load_.name, []).append(
                            run.measure(version, load_, args.duration))
            if not asyncio.run(backend_alive(versions["after"].url, pid)):
                run.failures.append("the AFTER server's LISTEN connection ended during the run")
        finally:
            for version in versions.values():
                if version.server:
                    version.server.stop()
            pg.cleanup()
    results["load_end"] = round(os.getloadavg()[0], 2)
    table = "\n".join(report(versions, results))
    say("\n" + table)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    if run.failures:
        bench_main.banner("failed runs, the figures are not trustworthy:\n"
                          + "\n".join(f"    {f}" for f in run.failures))
        return 1
    return 0


async def _fetch(url: str, sql: str) -> Any:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


if __name__ == "__main__":
    sys.exit(main())
