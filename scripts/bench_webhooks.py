"""Webhooks measured (issue 29, point 6): how fast one replica delivers, and what the outbox costs
a write.

    .venv/bin/python scripts/bench_webhooks.py [--subscriptions 1000] [--burst 5000]
        [--rounds 3] [--duration 5]

One private PostgreSQL (pgserver, in a temporary directory, deleted at the end), migrated; one
`task-api serve --workers 1` (WEBHOOK_ALLOW_HTTP and WEBHOOK_ALLOW_PRIVATE_ADDRESSES on: the
receiver is on loopback; everything else as shipped, WEBHOOK_WORKER_CONCURRENCY 32 unless
--concurrency); a receiver in this process (uvicorn, loopback) that answers every request 204
after 50 ms and notes when each `webhook-id` arrived.

Delivery: `--subscriptions` users, each with one subscription to the receiver (task.created).
1. Latency: tasks inserted at a steady 20 a second (a user each, round robin) for 10 s, each
   insert its own transaction; commit-to-delivery is the receiver's arrival time minus the
   moment the insert's COMMIT returned (one clock, this process): p50, p99, max.
2. Throughput: `--burst` tasks inserted as fast as 4 connections go; deliveries a second is the
   burst's deliveries divided by the time from the first insert to the last arrival, and also
   over the arrivals only (first to last).

Write cost in the database: PostgreSQL's CPU time (its backend's /proc/<pid>/stat) per INSERT
of a task and per UPDATE of `completed`, 1,000 of each, autocommit as the API runs them, in the
same three states, 5 rounds: it moves far less than wall time on a shared machine.

Write cost over HTTP (wrk -t2 -c16, bench/requests.lua, as scripts/bench.py runs it): POST
/api/tasks and PATCH /api/tasks/{id} of one writer, in three states of the same database and
server, in alternating order each round: `before` (the outbox trigger disabled: what a write cost
before migration 0010), `no webhook` (the trigger on, the writer has no subscription: one index
probe) and `subscribed` (the writer has a subscription: a delivery row per write, and the
deliveries going out from the same process). Prints req/s (median of the rounds) and the
ratios to `before`, each round's too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_script import bench_main as load_bench_main
from impl.platform.database import connect_options
from impl.platform.embedded import pgserver_module
from impl.platform.migrate import upgrade
from impl.platform.token_verifier import mint_hs256

bench_main = load_bench_main()
say = bench_main.say
ANSWER_SECONDS = 0.05
LOADS = (bench_main.Load("POST /api/tasks", lua_mode="post"),
         bench_main.Load("PATCH /api/tasks/{id}", lua_mode="patch"))
STATES = ("before", "no webhook", "subscribed")


class Receiver:
    """Answers 204 after 50 ms; notes each webhook-id's first arrival (time.time())."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.requests = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        now = time.time()
        headers = dict(scope["headers"])
        self.requests += 1
        self.arrived.setdefault(headers[b"webhook-id"].decode(), now)
        while (await receive()).get("more_body"):
            pass
        await asyncio.sleep(ANSWER_SECONDS)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def start_receiver(receiver: Receiver) -> tuple[str, uvicorn.Server]:
    port = bench_main.free_port()
    server = uvicorn.Server(uvicorn.Config(receiver, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False,
                                           lifespan="off", backlog=4096))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}/hook", server


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def subscribe_users(api_url: str, hook_url: str, users: list[str]) -> None:
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as api:
        semaphore = asyncio.Semaphore(16)

        async def one(user: str) -> None:
            async with semaphore:
                token = mint_hs256(bench_main.SECRET, user, 3600)
                answer = await api.post("/api/webhooks", json={
                    "url": f"{hook_url}/{user}", "event_types": ["task.created"]},
                    headers={"Authorization": f"Bearer {token}"})
                answer.raise_for_status()

        await asyncio.gather(*(one(user) for user in users))


async def delivery_ids(connection: asyncpg.Connection, task_ids: dict[uuid.UUID, float]
                       ) -> dict[str, float]:
    """webhook-id -> the commit time of the insert it reports."""
    rows = await connection.fetch(
        "SELECT id, (payload->'data'->>'id')::uuid AS task_id FROM webhook_deliveries "
        "WHERE (payload->'data'->>'id')::uuid = ANY($1::uuid[])", list(task_ids))
    return {str(row["id"]): task_ids[row["task_id"]] for row in rows}


async def wait_delivered(receiver: Receiver, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(i not in receiver.arrived for i in ids):
        if time.monotonic() > deadline:
            missing = sum(1 for i in ids if i not in receiver.arrived)
            raise RuntimeError(f"{missing} deliveries not arrived after {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def measure_latency(dsn: str, receiver: Receiver, users: list[str]) -> dict[str, float]:
    committed: dict[uuid.UUID, float] = {}
    connection = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        for n in range(200):  # 20 a second for 10 s
            await asyncio.sleep(max(0.0, started + n / 20 - time.monotonic()))
            task_id = uuid.uuid4()
            await connection.execute("INSERT INTO tasks (id, user_id, title) VALUES ($1, $2, $3)",
                                     task_id, users[n % len(users)], f"latency {n}")
            committed[task_id] = time.time()
        ids = await delivery_ids(connection, committed)
    finally:
        await connection.close()
    await wait_delivered(receiver, list(ids), 120)
    latencies = [(receiver.arrived[i] - at) * 1000 for i, at in ids.items()]
    return {"count": len(latencies), "p50_ms": percentile(latencies, 0.5),
            "p99_ms": percentile(latencies, 0.99), "max_ms": max(latencies)}


async def measure_throughput(dsn: str, receiver: Receiver, users: list[str], burst: int
                             ) -> dict[str, float]:
    committed: dict[uuid.UUID, float] = {}
    connections = [await asyncpg.connect(dsn) for _ in range(4)]
    try:
        began = time.time()

        async def writer(index: int, connection: asyncpg.Connection) -> None:
            for n in range(index, burst, len(connections)):
                task_id = uuid.uuid4()
                await connection.execute(
                    "INSERT INTO tasks (id, user_id, title) VALUES ($1, $2, $3)",
                    task_id, users[n % len(users)], f"burst {n}")
                committed[task_id] = time.time()

        await asyncio.gather(*(writer(i, c) for i, c in enumerate(connections)))
        written = time.time()
        ids = await delivery_ids(connections[0], committed)
    finally:
        for connection in connections:
            await connection.close()
    await wait_delivered(receiver, list(ids), 600)
    arrivals = [receiver.arrived[i] for i in ids]
    latencies = [(receiver.arrived[i] - at) * 1000 for i, at in ids.items()]
    return {
        "deliveries": len(ids), "insert_seconds": written - began,
        "per_second_from_first_insert": len(ids) / (max(arrivals) - began),
        "per_second_arrivals": len(ids) / (max(arrivals) - min(arrivals)),
        "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
    }


async def set_state(dsn: str, state: str, writer: str, hook_url: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        trigger = "DISABLE" if state == "before" else "ENABLE"
        await connection.execute(f"ALTER TABLE tasks {trigger} TRIGGER tasks_webhook_event")
        await connection.execute("UPDATE webhook_subscriptions SET enabled = $2 WHERE user_id = $1",
                                 writer, state == "subscribed")
        # Tasks written by the previous run stay (PATCH rotates over the first ones); the
        # delivered rows are cleared so each run starts from the same queue.
        await connection.execute("DELETE FROM webhook_deliveries WHERE user_id = $1 "
                                 "AND state <> 'pending'", writer)
        await connection.execute("VACUUM ANALYZE webhook_deliveries")
    finally:
        await connection.close()


def write_cost(api_url: str, dsn: str, hook_url: str, args: argparse.Namespace,
               workdir: Path) -> dict[str, dict[str, list[float]]]:
    writer = uuid.uuid4().hex
    token = mint_hs256(bench_main.SECRET, writer, 4 * 3600)
    with httpx.Client(base_url=api_url, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as api:
        ids = [api.post("/api/tasks", json={"title": f"p{n}"}).json()["data"]["id"]
               for n in range(2000)]
        api.post("/api/webhooks", json={"url": f"{hook_url}/writer",
                                        "event_types": ["task.created", "task.updated",
                                                        "task.completed"]}).raise_for_status()
    ids_file = workdir / "patch-ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    runs: dict[str, dict[str, list[float]]] = {s: {ld.name: [] for ld in LOADS} for s in STATES}
    for load in LOADS:  # warm-up, not counted
        bench_main.run_wrk(api_url, load, token, 2, ids_file)
    for round_ in range(args.rounds):
        order = STATES if round_ % 2 == 0 else tuple(reversed(STATES))
        for load in LOADS:
            for state in order:
                asyncio.run(set_state(dsn, state, writer, hook_url))
                result = bench_main.run_wrk(api_url, load, token, args.duration, ids_file)
                if result.failed:
                    raise RuntimeError(f"{state} {load.name}: {result.brief()}")
                runs[state][load.name].append(result.rps)
                say(f"    round {round_ + 1} {load.name:<22} {state:<11} {result.rps:8.1f} req/s"
                    f"  p50 {result.p50:6.2f} ms  p99 {result.p99:6.2f} ms")
    asyncio.run(set_state(dsn, "no webhook", writer, hook_url))
    return runs


def backend_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def database_cost(dsn: str, hook_url: str, statements: int = 1000, rounds: int = 5
                        ) -> dict[str, tuple[float, float]]:
    """Microseconds of PostgreSQL CPU per INSERT and per UPDATE, median of the rounds."""
    connection = await asyncpg.connect(dsn)
    try:
        pid = await connection.fetchval("SELECT pg_backend_pid()")
        subscribed = uuid.uuid4().hex
        await connection.execute(
            "INSERT INTO webhook_subscriptions (id, user_id, url, event_types, secret) "
            "VALUES ($1, $2, $3, '{task.created,task.updated,task.completed}', 'whsec_x')",
            uuid.uuid4(), subscribed, hook_url + "/database-cost")
        plain = uuid.uuid4().hex
        costs: dict[str, list[tuple[float, float]]] = {state: [] for state in STATES}
        for round_ in range(rounds):
            for state in STATES if round_ % 2 == 0 else tuple(reversed(STATES)):
                trigger = "DISABLE" if state == "before" else "ENABLE"
                await connection.execute(f"ALTER TABLE tasks {trigger} TRIGGER tasks_webhook_event")
                user = subscribed if state == "subscribed" else plain
                ids = [uuid.uuid4() for _ in range(statements)]
                began = backend_cpu_seconds(pid)
                for task_id in ids:
                    await connection.execute(
                        "INSERT INTO tasks (id, user_id, title) VALUES ($1, $2, 'cost')",
                        task_id, user)
                inserted = backend_cpu_seconds(pid)
                for task_id in ids:  # as the store's PATCH of `completed` does
                    await connection.execute(
                        "UPDATE tasks SET completed = true, completed_at = now(), "
                        "version = version + 1, updated_at = now(), "
                        "change_xid = pg_current_xact_id() WHERE id = $1", task_id)
                updated = backend_cpu_seconds(pid)
                costs[state].append(((inserted - began) / statements * 1e6,
                                     (updated - inserted) / statements * 1e6))
        await connection.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_webhook_event")
        # The subscribed user's deliveries would go out now: their endpoint gets them (204).
    finally:
        await connection.close()
    return {state: (statistics.median(i for i, _ in values),
                    statistics.median(u for _, u in values))
            for state, values in costs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="WEBHOOK_WORKER_CONCURRENCY of the replica")
    parser.add_argument("--no-write-cost", action="store_true", help="delivery figures only")
    args = parser.parse_args()
    bench_main.ensure_wrk()
    pgserver = pgserver_module()
    receiver = Receiver()
    hook_url, receiver_server = start_receiver(receiver)
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        workdir = Path(tmp)
        database = pgserver.get_server(workdir / "pg", cleanup_mode="delete")
        url = database.get_uri()
        dsn = connect_options(url).dsn
        upgrade(url)
        env = bench_main.server_env(url)
        env.update(WEBHOOK_ALLOW_HTTP="true", WEBHOOK_ALLOW_PRIVATE_ADDRESSES="true",
                   WEBHOOK_WORKER_CONCURRENCY=str(args.concurrency), MAX_TASKS_PER_USER="0")
        port = bench_main.free_port()
        server = bench_main.Server(
            "task-api", [str(Path(sys.executable).parent / "task-api"), "serve", "--host",
                         "127.0.0.1", "--port", str(port), "--workers", "1"],
            env, port, workdir, workdir / "server.log")
        try:
            server.wait_ready()
            users = [uuid.uuid4().hex for _ in range(args.subscriptions)]
            asyncio.run(subscribe_users(server.url, hook_url, users))
            say(f"webhooks: {args.subscriptions} subscriptions, receiver answers in "
                f"{ANSWER_SECONDS * 1000:.0f} ms, WEBHOOK_WORKER_CONCURRENCY {args.concurrency}")
            latency = asyncio.run(measure_latency(dsn, receiver, users))
            say(f"  commit to delivery at 20 writes/s ({latency['count']} events): p50 "
                f"{latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms, max "
                f"{latency['max_ms']:.1f} ms")
            burst = asyncio.run(measure_throughput(dsn, receiver, users, args.burst))
            say(f"  burst of {burst['deliveries']} events (inserted in "
                f"{burst['insert_seconds']:.1f} s): {burst['per_second_from_first_insert']:.0f} "
                f"deliveries/s from the first insert to the last arrival, "
                f"{burst['per_second_arrivals']:.0f}/s first to last arrival; commit to delivery "
                f"p50 {burst['p50_ms']:.0f} ms, p99 {burst['p99_ms']:.0f} ms")
            if args.no_write_cost:
                return 0
            cost = asyncio.run(database_cost(dsn, hook_url))
            say("write cost in the database (PostgreSQL CPU per statement, median of 5 rounds "
                "of 1,000):")
            for state, (insert, update) in cost.items():
                say(f"  {state:<11} INSERT {insert:6.0f} us ({insert / cost['before'][0]:.2f}x)"
                    f"   UPDATE completed {update:6.0f} us ({update / cost['before'][1]:.2f}x)")
            say(f"write cost over HTTP: {args.rounds} rounds x {args.duration:g} s per endpoint "
                "and state (wrk -t2 -c16)")
            runs = write_cost(server.url, dsn, hook_url, args, workdir)
            say("| request | before req/s | no webhook req/s (/ before) | subscribed req/s "
                "(/ before) | per round, no webhook / before; subscribed / before |")
            say("|---|---:|---:|---:|---|")
            for load in LOADS:
                before = runs["before"][load.name]
                row = [f"| {load.name} | {statistics.median(before):,.0f}"]
                rounds = []
                for state in STATES[1:]:
                    values = runs[state][load.name]
                    row.append(f"{statistics.median(values):,.0f} "
                               f"({statistics.median(values) / statistics.median(before):.2f})")
                    rounds.append(" ".join(f"{v / b:.2f}" for v, b in zip(values, before,
                                                                          strict=True)))
                say(" | ".join(row) + " | " + "; ".join(rounds) + " |")
        finally:
            server.stop()
            receiver_server.should_exit = True
            database.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
