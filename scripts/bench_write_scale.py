"""What one write costs the database as its user's tasks grow: a create, a completion, a retitle
and a delete (of tasks with tags), one statement at a time on one connection as the API's role,
for users of 1,000, 10,000 and 100,000 tasks, at the head migration and at 0012 (before 0013,
task_tags' trigger by key, and 0014, generic plans for every session), the two alternating over
the rounds on the same data. It connects as a pooler's sessions do, asking for no plan mode:
at 0012 its statements, the triggers' included, are planned with their values.

    .venv/bin/python scripts/bench_write_scale.py [--statements 400] [--rounds 2] [--sizes 1000,10000,100000]

Each size has two users: one loaded before the statistics are gathered (ANALYZE knows it) and one
loaded after (as a new user, or one whose tasks grew since the last ANALYZE; autovacuum is off
for the run so that it stays so), among 200 other users of 50 tasks (with many users the
planner's estimate for a user it does not know is a few rows). It starts a private PostgreSQL
(pgserver, temporary directory). Figures: the PostgreSQL backend's CPU per statement (/proc,
10 ms ticks: 400 statements of 0.5 ms give about 5 % resolution), the median over the rounds.
The statements are the store's (INSERT_SQL, DELETE_SQL) or written as its UPDATEs are (naming
their caller, stamping change_xid). What a round deletes is put back (COPY, triggers on) and
what it creates is deleted, unmeasured, before the next. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from alembic import command

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.cpu_share import process_cpu_seconds
from bench.data import COPY_COLUMNS, copy_tasks, task_rows
from bench.private_postgres import private_postgres
from impl.platform.embedded import api_role_url
from impl.platform.migrate import alembic_config, upgrade
from impl.platform.row_scope import as_caller
from impl.tasks.store import DELETE_SQL, INSERT_SQL, insert_args

SIZES = (1_000, 10_000, 100_000)
OTHERS, OTHER_TASKS = 200, 50
REVISIONS = ("head", "0012")
OPERATIONS = ("create", "complete", "retitle", "delete")
CALLER = as_caller("$2")
COMPLETE_SQL = (
    "UPDATE tasks SET completed = NOT completed, completed_at = CASE WHEN NOT completed "
    "THEN now() END, version = version + 1, updated_at = now(), "
    f"change_xid = pg_current_xact_id() WHERE id = $1 AND user_id = $2 AND {CALLER}"
)
RETITLE_SQL = (
    "UPDATE tasks SET title = $3, version = version + 1, updated_at = now(), "
    f"change_xid = pg_current_xact_id() WHERE id = $1 AND user_id = $2 AND {CALLER}"
)
FIELDS = {"title": "Plan the garden shed", "description": "Compare at least three offers",
          "completed": False, "priority": "medium",
          "due_date": dt.datetime(2030, 6, 1, tzinfo=dt.UTC), "tags": ["home", "work"],
          "recurrence": None, "time_zone": None, "reminders": "[]"}



async def _load(admin: asyncpg.Connection, sizes: tuple[int, ...]) -> list[str]:
    rng, now = random.Random(11), dt.datetime.now(dt.UTC)
    for index in range(0, OTHERS, 50):
        users = [f"other-{n}" for n in range(index, index + 50)]
        rows = [row for user in users for row in task_rows(user, OTHER_TASKS, rng, now)]
        await copy_tasks(admin, users, rows)
    for size in sizes:
        await copy_tasks(admin, [f"known-{size}"], task_rows(f"known-{size}", size, rng, now))
    await admin.execute("VACUUM ANALYZE")
    for table in ("tasks", "task_tags", "task_words", "task_counts", "task_tag_counts"):
        await admin.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
    for size in sizes:
        await copy_tasks(admin, [f"new-{size}"], task_rows(f"new-{size}", size, rng, now))
    return [f"{kind}-{size}" for size in sizes for kind in ("known", "new")]


async def _measure(url: str, admin: asyncpg.Connection, user: str,
                   statements: int) -> dict[str, float]:
    """CPU us per statement of each operation, for one user, in a session of its own."""
    tagged = [row["id"] for row in await admin.fetch(
        "SELECT id FROM tasks WHERE user_id = $1 AND cardinality(tags) > 0 ORDER BY random() "
        "LIMIT $2", user, 2 * statements)]
    retitled, deleted = tagged[:statements], tagged[statements:]
    kept = await admin.fetch(
        f"SELECT {', '.join(COPY_COLUMNS)} FROM tasks WHERE id = ANY($1::uuid[])", deleted)
    created: list[uuid.UUID] = []
    connection = await asyncpg.connect(api_role_url(url))
    pid = await connection.fetchval("SELECT pg_backend_pid()")

    async def create(index: int) -> None:
        task_id = uuid.uuid4()
        created.append(task_id)
        await connection.execute(INSERT_SQL, *insert_args(task_id, user, FIELDS))

    async def complete(index: int) -> None:
        await connection.execute(COMPLETE_SQL, tagged[index], user)

    async def retitle(index: int) -> None:
        await connection.execute(RETITLE_SQL, retitled[index % len(retitled)], user,
                                 f"Renamed chore {index} about the garden")

    async def delete(index: int) -> None:
        await connection.execute(DELETE_SQL, deleted[index % len(deleted)], user, None)

    work: dict[str, Callable[[int], Awaitable[None]]] = {
        "create": create, "complete": complete, "retitle": retitle, "delete": delete}
    figures = {}
    try:
        for name in OPERATIONS:
            count = statements if name != "delete" else len(deleted)
            before = process_cpu_seconds(pid)
            for index in range(count):
                await work[name](index)
            figures[name] = (process_cpu_seconds(pid) - before) / count * 1e6
    finally:
        await connection.close()
    # Put the user back as it was: the created tasks go, the deleted ones return.
    await admin.execute("DELETE FROM tasks WHERE id = ANY($1::uuid[])", created)
    await admin.copy_records_to_table("tasks", records=[tuple(row) for row in kept],
                                      columns=COPY_COLUMNS)
    return figures


async def _run(url: str, args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(url)
    try:
        started = time.monotonic()
        users = await _load(admin, tuple(int(size) for size in args.sizes.split(",")))
        print(f"loaded in {time.monotonic() - started:.0f} s; {args.statements} statements per "
              f"figure, {args.rounds} rounds; load average {os.getloadavg()[0]:.2f}", flush=True)
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for round_number in range(args.rounds):
            order = REVISIONS if round_number % 2 == 0 else REVISIONS[::-1]
            for revision in order:
                await asyncio.to_thread(_migrate_to, url, revision)
                for user in users:
                    figures = await _measure(url, admin, user, args.statements)
                    results.setdefault((revision, user), []).append(figures)
                    print(f"  round {round_number + 1} {revision:>4} {user:>13}: " + ", ".join(
                        f"{name} {figures[name]:,.0f}" for name in OPERATIONS), flush=True)
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}\n")
        print("| user | migration | " + " | ".join(f"{name} us" for name in OPERATIONS) + " |")
        print("|---|---|" + "---:|" * len(OPERATIONS))
        for user in users:
            for revision in REVISIONS:
                runs = results[(revision, user)]
                cells = " | ".join(f"{statistics.median(run[name] for run in runs):,.0f}"
                                   for name in OPERATIONS)
                print(f"| {user} | {revision} | {cells} |")
    finally:
        await admin.close()


def _migrate_to(url: str, revision: str) -> None:
    """0012 <-> head: migrations 0013 and 0014 replace a function and set a default."""
    if revision == "head":
        upgrade(url)
    else:
        command.downgrade(alembic_config(url), revision)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", default=",".join(str(size) for size in SIZES))
    args = parser.parse_args()
    with private_postgres("task-api-write-scale-") as url:
        asyncio.run(_run(url, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
