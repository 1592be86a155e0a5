"""What a crash costs behind HAProxy: the deploy recipe (scripts/local_stack) with N replicas,
scripts/load.py through HAProxy (Idempotency-Keys on), and one replica killed with SIGKILL in
the middle of the load. Prints, per run: how many requests failed (and which), how many
acknowledged writes were lost, how long until HAProxy marked the replica DOWN, when it last
sent it a request, and its connection errors, retries and redispatches.

    .venv/bin/python scripts/bench_replica_kill.py [--runs 3] [--users 32]

`--signal TERM --ready-grace 0` measures a stop without the hand-over instead (the control for
the rolling-restart test). Uses DATABASE_URL and BETTER_AUTH_SECRET when set, else a throwaway
embedded PostgreSQL. Figures, not assertions: exit status 0 unless the stack fails to start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file: the stack's package is scripts.local_stack
    sys.path.insert(0, str(ROOT))

from scripts.local_stack.stack import READY_GRACE_SECONDS, Stack, running_stack
from scripts.local_stack.writes import differences

COUNTERS = ("stot", "econ", "eresp", "wretr", "wredis")


async def one_run(stack: Stack, args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    victim = stack.replicas[0]
    state_path, report_path = directory / "state.json", directory / "load.json"
    before = stack.haproxy.servers()[victim.name]
    runner = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "scripts" / "load.py"), "--base-url", stack.url,
        "--secret", stack.secret, "--users", str(args.users), "--seconds", "600",
        "--idempotency-keys", "--out", str(report_path), "--state", str(state_path),
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(args.before)
    assert victim.process is not None
    log_from = len(stack.haproxy.log)
    sent_at = time.monotonic()
    victim.process.send_signal(getattr(signal, f"SIG{args.signal}"))
    # Poll HAProxy: when it marked the replica DOWN, when its session counter last moved.
    last_stot, last_moved, down_after = int(before["stot"]), sent_at, None
    while time.monotonic() - sent_at < args.after:
        row = stack.haproxy.servers()[victim.name]
        if int(row["stot"]) != last_stot:
            last_stot, last_moved = int(row["stot"]), time.monotonic()
        if down_after is None and row["status"].startswith("DOWN"):
            down_after = time.monotonic() - sent_at
        await asyncio.sleep(0.005)
    runner.send_signal(signal.SIGTERM)
    await runner.wait()
    after = stack.haproxy.servers()[victim.name]
    victim.process.wait()
    victim.start()
    stack.haproxy.wait_status(victim.name, "UP", timeout=30)

    # HAProxy logs the requests that were not plain successes: (status, termination state).
    logged: Counter[str] = Counter()
    for line in stack.haproxy.log[log_from:].splitlines():
        fields = line.split()
        if len(fields) > 12 and fields[3].startswith("replicas/"):
            method = fields[12].lstrip('"')
            retried = "redispatched" if fields[10].endswith("+1") else ""
            logged[" ".join(f for f in (method, fields[3], fields[5], fields[9], retried) if f)] += 1
    report = json.loads(report_path.read_text())
    state = json.loads(state_path.read_text())
    differing, _ = await differences(stack.database_url, state)
    failed: dict[str, int] = {}
    for op, statuses in report["operations"].items():
        for status, count in statuses["statuses"].items():
            if not status.startswith("2"):
                failed[f"{op} {status}"] = count
    return {
        "signal": args.signal,
        "requests": report["requests"],
        "failed": report["error_count"],
        "failed_by_kind": failed,
        "lost_acknowledged_writes": len(differing),
        "users_with_unknown_outcome": sum(user["uncertain"] for user in state.values()),
        "down_after_s": None if down_after is None else round(down_after, 3),
        "last_request_to_it_after_s": round(last_moved - sent_at, 3),
        "haproxy": {k: int(after[k]) - int(before[k]) for k in COUNTERS},
        "haproxy_log": dict(logged),
    }


def bench(args: argparse.Namespace) -> None:
    database_url = os.environ.get("DATABASE_URL")
    with tempfile.TemporaryDirectory(prefix="task-api-bench-kill-") as tmp:
        env = {"RATE_LIMIT_PER_SECOND": "1000000", "RATE_LIMIT_BURST": "1000000",
               "LOG_LEVEL": "WARNING"}
        stack_args: dict[str, Any] = {
            "database_url": database_url, "secret": os.environ.get("BETTER_AUTH_SECRET"),
            "data_dir": Path(tmp) / "data", "env": env, "ready_grace": args.ready_grace,
        }
        # Outside any event loop: the stack migrates the database with asyncio.run.
        with running_stack(args.replicas, **stack_args) as stack:
            print(f"stack: {args.replicas} replicas behind {stack.url}; load: {args.users} "
                  f"users; SIG{args.signal} to {stack.replicas[0].name} after {args.before} s, "
                  f"watched for {args.after} s", flush=True)
            for run in range(1, args.runs + 1):
                result = asyncio.run(one_run(stack, args, Path(tmp)))
                print(f"run {run}: {json.dumps(result)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--before", type=float, default=3.0, help="seconds of load before")
    parser.add_argument("--after", type=float, default=3.0, help="seconds watched after")
    parser.add_argument("--signal", choices=("KILL", "TERM"), default="KILL")
    parser.add_argument("--ready-grace", type=float, default=READY_GRACE_SECONDS)
    bench(parser.parse_args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
