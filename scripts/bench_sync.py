"""The change feed and the live stream, measured (issue 27): figures printed, never asserted.

    .venv/bin/python scripts/bench_sync.py                       # both parts, about 6 minutes
    .venv/bin/python scripts/bench_sync.py --skip-streams        # the change pages only
    .venv/bin/python scripts/bench_sync.py --skip-pages --streams 1000 --stream-users 100 --rate 10

It starts a private PostgreSQL (pgserver, in a temporary directory), migrates it to head and loads
realistic tasks with COPY (bench/data.py): users with 100, 1,000, 10,000 and 100,000 tasks, 100
other users with 1,000 tasks each (a shared table, as scripts/bench.py does) and the stream users
(20 tasks each). Then `task-api serve --workers 1` (RATE_LIMIT_PER_SECOND=0, the stream cap
raised).

1. Change pages (bench/changes.py): a first sync's first and second page and a later sync's
   page (a few tasks changed since the token; and nothing changed) at every size, the sizes of
   one kind in turn, `--rounds` rounds of `--requests` requests per point, the median of the
   rounds' medians; the statement alone and the buffers it reads beside it.
2. Streams (bench/streams.py): `--streams` streams over `--stream-users` users, opened from
   `--clients` client processes; the server's RSS before and after opening them; then a writer
   PATCHes one task at a time, `--rate` a second for `--seconds`, round-robin over the users, and
   notes the moment each response arrived (just after the commit). Latency: from that moment to
   the event's arrival on every stream of the task's user.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import changes as bench_changes
from bench import streams as bench_streams
from bench.bench_script import bench_main as load_bench_main
from bench.data import copy_tasks, task_rows
from impl.platform.migrate import upgrade
from impl.platform.token_verifier import mint_hs256
from impl.tasks.sync_token import SyncTokenCodec

# scripts/bench.py's servers, settings and wrk runner.
bench_main = load_bench_main()

NAMESPACE = uuid.UUID("0b9c8f3e-4c1e-4f7a-9d51-7a1c2e3f4b60")
SIZES = (100, 1_000, 10_000, 100_000)
OTHER_USERS, OTHER_TASKS = 100, 1_000
STREAM_TASKS = 20
CURSOR_SECRET = "bench-sync-cursor-secret-" + "c" * 32


def sync_user(kind: str, index: int) -> str:
    return uuid.uuid5(NAMESPACE, f"bench-sync-{kind}-{index}").hex


say = bench_main.say


async def load(url: str, sizes: tuple[int, ...], stream_users: int) -> int:
    rng, now = random.Random(2027), dt.datetime.now(dt.UTC)
    connection = await asyncpg.connect(url)
    try:
        users = [*((sync_user("size", size), size) for size in sizes),
                 *((sync_user("other", i), OTHER_TASKS) for i in range(OTHER_USERS)),
                 *((sync_user("stream", i), STREAM_TASKS) for i in range(stream_users))]
        for user, count in users:
            await copy_tasks(connection, [user], task_rows(user, count, rng, now))
        await connection.execute("VACUUM ANALYZE")
        return int(await connection.fetchval("SELECT count(*) FROM tasks"))
    finally:
        await connection.close()


def rss_kb(pid: int) -> int:
    """The resident memory of a process and its children (uvicorn may fork), in kB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    for one in pids:
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- 1. change pages ------------------------------------------------------------------------------

def measure_pages(server: Any, url: str, sizes: tuple[int, ...], rounds: int,
                  requests: int) -> dict[str, Any]:
    users = {size: (sync_user("size", size),
                    mint_hs256(bench_main.SECRET, sync_user("size", size), 4 * 3600))
             for size in sizes}
    api = bench_changes.Api(server.url)
    points = bench_changes.pages(api, users)
    say(f"bench_sync: {len(points)} change pages, {rounds} rounds of {requests} requests each")
    medians = asyncio.run(bench_changes.measure("127.0.0.1", server.port, points, rounds,
                                                requests, say))
    p50 = [statistics.median(m) for m in medians]
    codec = SyncTokenCodec(CURSOR_SECRET.encode())
    sql = asyncio.run(bench_changes.statements(url, points, codec))
    rows = [{"kind": p.kind, "tasks": p.size, "limit": p.limit, "rows": p.rows,
             "p50_ms": round(p50[i], 3), "rounds_ms": [round(m, 3) for m in medians[i]],
             "sql_ms": round(sql[i]["sql_ms"], 3), "buffers": sql[i]["buffers"]}
            for i, p in enumerate(points)]
    return {"points": rows, "growth": bench_changes.growth(points, p50),
            "sql_growth": bench_changes.growth(points, [s["sql_ms"] for s in sql])}


def pages_table(result: dict[str, Any], sizes: tuple[int, ...]) -> list[str]:
    lines = ["| page | limit | " + " | ".join(f"{s:,}" for s in sizes)
             + " | growth (HTTP) | growth (statement) | rows | buffers |",
             "|---|---:|" + "---:|" * len(sizes) + "---:|---:|---|---|"]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    largest = max(row["tasks"] for row in result["points"])
    for row in sorted(result["points"], key=lambda row: row["tasks"] != largest):
        by_kind.setdefault(row["kind"], []).append(row)
    for rows in by_kind.values():
        rows.sort(key=lambda row: row["tasks"])
    for kind, rows in by_kind.items():
        at = {row["tasks"]: row for row in rows}
        cells = [f"{at[s]['p50_ms']:.2f} ({at[s]['sql_ms']:.2f})" if s in at else "-"
                 for s in sizes]
        growth = result["growth"].get(kind)
        sql_growth = result["sql_growth"].get(kind)
        lines.append(
            f"| {kind} | {rows[0]['limit']} | " + " | ".join(cells)
            + f" | {growth:.2f} | {sql_growth:.2f} | "
            + " / ".join(str(at[s]["rows"]) for s in sizes if s in at) + " | "
            + " / ".join(str(at[s]["buffers"]) for s in sizes if s in at) + " |")
    return lines


# --- 2. streams -----------------------------------------------------------------------------------

async def _write(base: str, bearers: dict[str, str], tasks: dict[str, list[dict[str, Any]]],
                 rate: float, seconds: float) -> list[bench_streams.Write]:
    """PATCH one task at a time, `rate` a second, round-robin over the users (and their tasks);
    each write's key and the moment its response arrived."""
    writes: list[bench_streams.Write] = []
    users = list(bearers)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        start = time.monotonic()
        count = int(rate * seconds)
        for index in range(count):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            user = users[index % len(users)]
            task = tasks[user][(index // len(users)) % len(tasks[user])]
            task["completed"] = not task["completed"]
            response = await client.patch(f"/api/tasks/{task['id']}",
                                          json={"completed": task["completed"]},
                                          headers={"Authorization": f"Bearer {bearers[user]}"})
            moment = time.monotonic()
            if response.status_code != 200:
                raise RuntimeError(f"PATCH: {response.status_code} {response.text[:200]}")
            writes.append((user, task["id"], int(response.json()["data"]["version"]), moment))
    return writes


def measure_streams(server: Any, workdir: Path, streams: int, stream_users: int, clients: int,
                    rates: list[float], seconds: float) -> dict[str, Any]:
    api = bench_changes.Api(server.url)
    bearers = {sync_user("stream", i): mint_hs256(bench_main.SECRET, sync_user("stream", i),
                                                  4 * 3600) for i in range(stream_users)}
    tasks, tokens = {}, {}
    for user, bearer in bearers.items():
        body = api.changes(bearer, None, 1000)
        tasks[user] = [{"id": t["id"], "completed": t["completed"]} for t in body["data"]["tasks"]]
        tokens[user] = body["meta"]["sync_token"]
    users = [list(bearers)[i % stream_users] for i in range(streams)]
    # Warm the server's stream code up (one stream opened and closed) before the first reading.
    asyncio.run(_one_stream(server.port, bearers[users[0]], tokens[users[0]]))
    time.sleep(1)
    before = rss_kb(server.process.pid)
    processes, outs = [], []
    for number in range(clients):
        mine = [(users[i], bearers[users[i]], tokens[users[i]])
                for i in range(number, streams, clients)]
        config = workdir / f"client-{number}.json"
        outs.append(workdir / f"client-{number}.out.json")
        config.write_text(json.dumps({"host": "127.0.0.1", "port": server.port,
                                      "streams": mine, "out": str(outs[-1]),
                                      "concurrency": 20}))
        processes.append(subprocess.Popen([sys.executable, "-m", "bench.streams", str(config)],
                                          cwd=REPO, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True))
    opened_at = time.monotonic()
    for process in processes:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        say(f"  client {process.pid}: {line}")
        if not line.startswith("ready"):
            raise RuntimeError(f"stream client: {line!r}")
    say(f"  {streams} streams open in {time.monotonic() - opened_at:.1f} s")
    time.sleep(2)
    after = rss_kb(server.process.pid)
    runs = []
    try:
        for rate in rates:
            cpu_start = cpu_seconds(server.process.pid)
            started = time.monotonic()
            writes = asyncio.run(_write(server.url, bearers, tasks, rate, seconds))
            elapsed = time.monotonic() - started
            cpu = cpu_seconds(server.process.pid) - cpu_start
            time.sleep(2)  # the last events arrive
            runs.append({"rate": rate, "writes": writes, "elapsed_s": elapsed,
                         "server_cpu_s": cpu})
            say(f"  {len(writes)} writes at {rate:g}/s in {elapsed:.1f} s, server CPU "
                f"{cpu:.1f} s")
    finally:
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("stop\n")
            process.stdin.flush()
        for process in processes:
            assert process.stdout is not None
            process.stdout.readline()
            process.wait(timeout=60)
    arrivals: list[list[bench_streams.Arrival]] = [[] for _ in range(streams)]
    failed = []
    for number, out in enumerate(outs):
        data = json.loads(out.read_text())
        for offset, (stream, failure) in enumerate(zip(data["arrivals"], data["failed"],
                                                       strict=True)):
            arrivals[number + offset * clients] = [tuple(a) for a in stream]  # type: ignore[misc]
            if failure:
                failed.append(failure)
    results = []
    for run in runs:
        found, missing = bench_streams.latencies(run["writes"], users, arrivals)
        results.append({"rate": run["rate"], "writes": len(run["writes"]),
                        "events": len(found), "missing": missing,
                        "server_cpu_s": round(run["server_cpu_s"], 2),
                        "elapsed_s": round(run["elapsed_s"], 2),
                        **{k: round(v * 1000, 2) if k != "n" else v
                           for k, v in bench_streams.summary(found).items()}})
    return {"streams": streams, "users": stream_users, "rss_before_kb": before,
            "rss_after_kb": after, "kb_per_stream": round((after - before) / streams, 1),
            "failed": failed[:5], "runs": results}


async def _one_stream(port: int, bearer: str, since: str) -> None:
    stream = bench_streams.Stream("127.0.0.1", port, bearer, since)
    task = asyncio.create_task(stream.run())
    await asyncio.wait_for(stream.ready.wait(), 30)
    task.cancel()


# --- main -----------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="sizes up to 10,000")
    parser.add_argument("--skip-pages", action="store_true")
    parser.add_argument("--skip-streams", action="store_true")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--stream-users", type=int, default=100)
    parser.add_argument("--clients", type=int, default=2, help="stream client processes")
    parser.add_argument("--rate", default="10,50", help="writes a second, one run each")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    sizes = SIZES[:3] if args.quick else SIZES
    from impl.platform.embedded import pgserver_module

    pgserver = pgserver_module()

    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="task-api-sync-") as tmp:
        workdir = Path(tmp)
        pg = pgserver.get_server(workdir / "pg", cleanup_mode="delete")
        server = None
        try:
            url = pg.get_uri()
            upgrade(url)
            stream_users = 0 if args.skip_streams else args.stream_users
            total = asyncio.run(load(url, () if args.skip_pages else sizes, stream_users))
            say(f"bench_sync: {total:,} tasks loaded")
            env = bench_main.server_env(url)
            env.update(RATE_LIMIT_PER_SECOND="0", CURSOR_SECRET=CURSOR_SECRET,
                       SYNC_MAX_STREAMS_PER_USER=str(max(10, args.streams)))
            task_api = Path(sys.executable).parent / "task-api"
            port = bench_main.free_port()
            server = bench_main.Server(
                "task-api --workers 1",
                [str(task_api), "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--workers", "1"], env, port, workdir, workdir / "server.log")
            server.wait_ready()
            if not args.skip_pages:
                results["pages"] = measure_pages(server, url, sizes, args.rounds, args.requests)
            if not args.skip_streams:
                results["streams"] = measure_streams(
                    server, workdir, args.streams, args.stream_users, args.clients,
                    [float(r) for r in args.rate.split(",")], args.seconds)
        finally:
            if server is not None:
                server.stop()
            pg.cleanup()
    results["load_average_at_end"] = round(os.getloadavg()[0], 2)
    report(results, sizes)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))
    return 0


def report(results: dict[str, Any], sizes: tuple[int, ...]) -> None:
    say(f"\n{results['date']}, load average {results['load_average_at_start']} at the start, "
        f"{results['load_average_at_end']} at the end\n")
    if "pages" in results:
        say("Change pages, p50 ms over HTTP (the statement alone in parentheses):\n")
        say("\n".join(pages_table(results["pages"], sizes)))
    if "streams" in results:
        s = results["streams"]
        say(f"\n{s['streams']} streams over {s['users']} users: server RSS "
            f"{s['rss_before_kb'] / 1024:.1f} MB -> {s['rss_after_kb'] / 1024:.1f} MB, "
            f"{s['kb_per_stream']} kB per stream; failed: {s['failed']}\n")
        say("| writes/s asked (done) | writes | events | missing | p50 ms | p99 ms | max ms | "
            "server CPU ms per write |")
        say("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for run in s["runs"]:
            say(f"| {run['rate']:g} ({run['writes'] / run['elapsed_s']:.0f}) | {run['writes']} | "
                f"{run['events']} | {run['missing']} | {run['p50']:.1f} | {run['p99']:.1f} | "
                f"{run['max']:.1f} | {run['server_cpu_s'] * 1000 / run['writes']:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
