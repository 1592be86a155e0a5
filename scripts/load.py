"""Load runner: N concurrent users, each looping a mixed create / list / patch / delete workflow
against a running server for a fixed time.

    .venv/bin/python scripts/load.py --base-url http://127.0.0.1:8000 --secret "$BETTER_AUTH_SECRET"

Every user is a fresh random UUID with its own HS256 token and its own HTTP connection; its
operations run one after another, so what it has been told (201, 200, 204) is exactly what it
owns. It checks every answer as it goes:

- any transport error or non-2xx status is an error;
- every listed task must carry the user's id and be one the user created and has not deleted
  (a leak: another user's task; a mismatch: a task or a value the user was never told about);
- every PATCH and DELETE sends If-Match with the last version the user was given, so a lost or
  phantom update answers 412 and counts as an error.

With --idempotency-keys every POST carries a fresh Idempotency-Key (what lets a load balancer
replay it safely). It runs for --seconds, or until SIGTERM or SIGINT: then every user finishes
the operation it is in and the figures are written as usual.

It writes the figures (throughput, latency percentiles per operation, error and leak samples) to
--out, and with --state the tasks each user ended with (id -> title, completed, version), so a
caller can compare them with the database. Exit status: 0 when there was no error, leak or
mismatch, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import secrets
import signal
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from impl.platform.token_verifier import mint_hs256

OPERATIONS = ("create", "list", "patch", "delete")
WEIGHTS = (0.30, 0.30, 0.28, 0.12)
MAX_TASKS_PER_USER = 30  # a list of limit=100 then always returns every task of the user
SAMPLES = 50  # error / leak / mismatch samples kept in the report


@dataclass
class Known:
    title: str
    completed: bool
    version: int


@dataclass
class User:
    id: str  # opaque, as Better Auth makes them
    token: str
    tasks: dict[str, Known] = field(default_factory=dict)
    # A write whose outcome is unknown (transport error, unexpected status): its row may or may
    # not exist, so this user's lists are no longer compared exactly (the error is reported).
    uncertain: bool = False
    created: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    errors: list[dict[str, Any]] = field(default_factory=list)
    leaks: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    leak_count: int = 0
    mismatch_count: int = 0

    def error(self, **entry: Any) -> None:
        self.error_count += 1
        if len(self.errors) < SAMPLES:
            self.errors.append(entry)

    def leak(self, **entry: Any) -> None:
        self.leak_count += 1
        if len(self.leaks) < SAMPLES:
            self.leaks.append(entry)

    def mismatch(self, **entry: Any) -> None:
        self.mismatch_count += 1
        if len(self.mismatches) < SAMPLES:
            self.mismatches.append(entry)


async def _call(
    http: httpx.AsyncClient, results: Results, user: User, op: str, method: str, url: str,
    **kwargs: Any,
) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await http.request(method, url, headers=user.headers | kwargs.pop("headers", {}),
                                      **kwargs)
    except httpx.HTTPError as exc:
        results.latencies[op].append(time.perf_counter() - started)
        results.statuses[op][type(exc).__name__] += 1
        results.error(op=op, user=str(user.id), url=url, error=f"{type(exc).__name__}: {exc}")
        return None
    results.latencies[op].append(time.perf_counter() - started)
    results.statuses[op][str(response.status_code)] += 1
    if not 200 <= response.status_code < 300:
        results.error(
            op=op, user=str(user.id), url=url, status=response.status_code,
            body=response.text[:300], request_id=response.headers.get("x-request-id"),
        )
        return None
    return response


def _remember(user: User, task: dict[str, Any]) -> None:
    user.tasks[task["id"]] = Known(task["title"], task["completed"], task["version"])


async def create(http: httpx.AsyncClient, results: Results, user: User, rng: random.Random,
                 owners: dict[str, str], keys: bool) -> None:
    user.created += 1
    body = {"title": f"load {str(user.id)[:8]} #{user.created}",
            "priority": rng.choice(("low", "medium", "high"))}
    if rng.random() < 0.3:
        body["tags"] = [f"t{rng.randrange(5)}"]
    headers = {"Idempotency-Key": str(uuid.uuid4())} if keys else {}
    response = await _call(http, results, user, "create", "POST", "/api/tasks", json=body,
                           headers=headers)
    if response is None:
        user.uncertain = True
        return
    task = response.json()["data"]
    if task["user_id"] != str(user.id) or task["title"] != body["title"] or task["version"] != 1:
        results.mismatch(op="create", user=str(user.id), sent=body, got=task)
    owners[task["id"]] = user.id
    _remember(user, task)


async def list_own(http: httpx.AsyncClient, results: Results, user: User,
                   owners: dict[str, str]) -> None:
    response = await _call(http, results, user, "list", "GET", "/api/tasks",
                           params={"limit": 100, "sort": "-created_at"})
    if response is None:
        return
    body = response.json()
    me = str(user.id)
    seen = set()
    for task in body["data"]:
        owner = owners.get(task["id"])
        if task["user_id"] != me or (owner is not None and owner != user.id):
            results.leak(user=me, task_id=task["id"], task_user_id=task["user_id"],
                         created_by=str(owner) if owner else None)
            continue
        seen.add(task["id"])
        known = user.tasks.get(task["id"])
        if user.uncertain:
            continue
        if known is None:
            results.mismatch(op="list", user=me, problem="unknown or deleted task listed",
                             task=task)
        elif (task["title"], task["completed"], task["version"]) != (
            known.title, known.completed, known.version
        ):
            results.mismatch(op="list", user=me, problem="stale values", task=task,
                             expected=vars(known))
    if not user.uncertain:
        missing = set(user.tasks) - seen
        if missing or body["meta"]["total"] != len(user.tasks):
            results.mismatch(op="list", user=me, problem="acknowledged tasks missing",
                             missing=sorted(missing), total=body["meta"]["total"],
                             expected_total=len(user.tasks))


async def patch(http: httpx.AsyncClient, results: Results, user: User,
                rng: random.Random) -> None:
    task_id = rng.choice(list(user.tasks))
    known = user.tasks[task_id]
    if rng.random() < 0.5:
        changes: dict[str, Any] = {"completed": not known.completed}
    else:
        changes = {"title": f"{known.title.split(' v')[0]} v{known.version + 1}"}
    response = await _call(http, results, user, "patch", "PATCH", f"/api/tasks/{task_id}",
                           json=changes, headers={"If-Match": f'"{known.version}"'})
    if response is None:
        user.uncertain = True
        return
    task = response.json()["data"]
    expected = {"title": known.title, "completed": known.completed, **changes}
    if (task["id"], task["user_id"], task["title"], task["completed"], task["version"]) != (
        task_id, str(user.id), expected["title"], expected["completed"], known.version + 1
    ):
        results.mismatch(op="patch", user=str(user.id), sent=changes, got=task,
                         expected_version=known.version + 1)
    _remember(user, task)


async def delete(http: httpx.AsyncClient, results: Results, user: User,
                 rng: random.Random) -> None:
    task_id = rng.choice(list(user.tasks))
    known = user.tasks[task_id]
    response = await _call(http, results, user, "delete", "DELETE", f"/api/tasks/{task_id}",
                           headers={"If-Match": f'"{known.version}"'})
    if response is None:
        user.uncertain = True
        return
    del user.tasks[task_id]


class Clock:
    """The shared end of the run, set once every user's client is open."""

    deadline = float("inf")


async def user_loop(base_url: str, results: Results, user: User, clock: Clock, seed: int,
                    owners: dict[str, str], start: asyncio.Event,
                    ready: asyncio.Semaphore, keys: bool) -> None:
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        ready.release()
        await start.wait()
        while time.monotonic() < clock.deadline:
            if not user.tasks:
                op = "create"
            else:
                op = rng.choices(OPERATIONS, WEIGHTS)[0]
                if op == "create" and len(user.tasks) >= MAX_TASKS_PER_USER:
                    op = "delete"
            if op == "create":
                await create(http, results, user, rng, owners, keys)
            elif op == "list":
                await list_own(http, results, user, owners)
            elif op == "patch":
                await patch(http, results, user, rng)
            else:
                await delete(http, results, user, rng)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list, in milliseconds."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1] * 1000, 2)


def summary(latencies: list[float], elapsed: float) -> dict[str, Any]:
    values = sorted(latencies)
    return {
        "count": len(values),
        "rps": round(len(values) / elapsed, 1),
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "p99_ms": percentile(values, 99),
        "max_ms": round(values[-1] * 1000, 2) if values else float("nan"),
    }


async def run(base_url: str, secret: str, users: int, seconds: float, seed: int,
              keys: bool = False) -> tuple[dict[str, Any], list[User]]:
    people = [User(user_id, mint_hs256(secret, user_id, int(seconds) + 3600))
              for user_id in (secrets.token_urlsafe(24) for _ in range(users))]
    results = Results()
    owners: dict[str, str] = {}
    clock = Clock()
    start = asyncio.Event()
    ready = asyncio.Semaphore(0)
    tasks = [
        asyncio.create_task(
            user_loop(base_url, results, user, clock, seed + index, owners, start, ready, keys)
        )
        for index, user in enumerate(people)
    ]
    for _ in people:  # every user's client is open: start them together
        await ready.acquire()
    began = time.monotonic()
    clock.deadline = began + seconds
    loop = asyncio.get_running_loop()

    def stop_early() -> None:  # every user finishes the operation under way
        clock.deadline = min(clock.deadline, time.monotonic())

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_early)
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - began
    everything = [value for values in results.latencies.values() for value in values]
    report = {
        "base_url": base_url,
        "users": users,
        "seconds": seconds,
        "idempotency_keys": keys,
        "elapsed_s": round(elapsed, 2),
        "requests": len(everything),
        "throughput_rps": round(len(everything) / elapsed, 1),
        "latency_ms": summary(everything, elapsed),
        "operations": {
            op: {**summary(results.latencies[op], elapsed),
                 "statuses": dict(results.statuses[op])}
            for op in OPERATIONS
        },
        "tasks_created": sum(user.created for user in people),
        "tasks_remaining": sum(len(user.tasks) for user in people),
        "error_count": results.error_count,
        "leak_count": results.leak_count,
        "mismatch_count": results.mismatch_count,
        "errors": results.errors,
        "leaks": results.leaks,
        "mismatches": results.mismatches,
    }
    return report, people


def format_report(report: dict[str, Any]) -> str:
    head = (
        f"{report['users']} users, {report['elapsed_s']} s: {report['requests']} requests, "
        f"{report['throughput_rps']} req/s; errors {report['error_count']}, "
        f"leaks {report['leak_count']}, mismatches {report['mismatch_count']}"
    )
    columns = ("operation", "count", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms")
    lines = [head, f"{columns[0]:<10}" + "".join(f"{c:>9}" for c in columns[1:])]
    rows = [*((op, report["operations"][op]) for op in OPERATIONS), ("all", report["latency_ms"])]
    for name, s in rows:
        values = (s["count"], s["rps"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"])
        lines.append(f"{name:<10}" + "".join(f"{v:>9}" for v in values))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--secret", default=os.environ.get("BETTER_AUTH_SECRET"),
                        help="HS256 secret of the server (default: $BETTER_AUTH_SECRET)")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("LOAD_SECONDS", "60")),
                        help="duration (default: $LOAD_SECONDS or 60)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the workload")
    parser.add_argument("--out", type=Path, default=Path("artifacts/load.json"))
    parser.add_argument("--idempotency-keys", action="store_true",
                        help="send a fresh Idempotency-Key with every POST")
    parser.add_argument("--state", type=Path,
                        help="write each user's acknowledged tasks here (JSON)")
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("--secret or BETTER_AUTH_SECRET is required")
    report, people = asyncio.run(
        run(args.base_url, args.secret, args.users, args.seconds, args.seed,
            args.idempotency_keys)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.state:
        state = {
            str(user.id): {
                "uncertain": user.uncertain,
                "tasks": {task_id: vars(known) for task_id, known in user.tasks.items()},
            }
            for user in people
        }
        args.state.write_text(json.dumps(state))
    print(format_report(report))
    print(f"report: {args.out}")
    failed = report["error_count"] or report["leak_count"] or report["mismatch_count"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
