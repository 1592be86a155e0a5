"""What each part of the schema costs writes that run concurrently, as the benchmark's do:
16 connections inserting, then updating `completed`, for 4 s each, with the schema as migrated
and then with one part after another taken away, down to the write ceiling's plain table.

    .venv/bin/python scripts/bench_write_parts.py [--seconds 4] [--connections 16] [--users one]

scripts/bench_writes.py measures the same parts one statement at a time; this one measures
them the way wrk loads the API: concurrent transactions, all of one user (`--users one`, the
benchmark's load: they meet on that user's counter rows) or each connection its own user
(`--users many`). Figures: statements per second (all connections) and the PostgreSQL backends'
CPU per statement (/proc). A variant keeps the change trigger but sends the NOTIFY after the
write's commit, from its own statement: PostgreSQL holds a database-wide lock from a notifying
transaction's commit until it ends, its WAL flush included (async.c, PreCommit_Notify), so
notifying writers commit one at a time. It starts a private PostgreSQL (pgserver, temporary
directory) with 40,000 tasks of 20 other users, and a LISTEN connection as the API's; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.data import copy_tasks, task_rows
from impl.platform.migrate import upgrade
from impl.tasks.store import INSERT_SQL, QUOTA_INSERT_SQL, insert_args

TICK = os.sysconf("SC_CLK_TCK")
NOTIFY_SQL = "SELECT pg_notify('task_changes', $1)"
UPDATE_SQL = (
    "UPDATE tasks SET completed = $3, completed_at = CASE WHEN $3 THEN COALESCE(completed_at, "
    "now()) END, version = version + 1, updated_at = now(), change_xid = pg_current_xact_id() "
    "WHERE id = $1 AND user_id = $2"
)
# Migration 0007's trigger function without its pg_notify calls (tombstones and the stamp check
# kept).
WITHOUT_NOTIFY = """
CREATE OR REPLACE FUNCTION task_change_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO task_tombstones (user_id, task_id) VALUES (OLD.user_id, OLD.id);
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.change_xid IS DISTINCT FROM pg_current_xact_id() THEN
        RAISE EXCEPTION 'an UPDATE of tasks must set change_xid = pg_current_xact_id()';
    END IF;
    RETURN NULL;
END $$
"""
SORT_INDEXES = ("ix_tasks_user_completed_created", "ix_tasks_user_updated", "ix_tasks_user_due",
                "ix_tasks_user_due_desc", "ix_tasks_user_priority", "ix_tasks_user_title",
                "ix_tasks_user_change")


def steps() -> list[tuple[str, list[str], dict[str, bool]]]:
    """(label, statements that take the part away, how the writes are sent); each step keeps
    the previous ones' removals."""
    return [
        ("as migrated (0007), the quota's insert", [], {"quota": True}),
        ("as migrated, the plain insert (no quota)", [], {}),
        ("NOTIFY sent after the commit, by its own statement", [WITHOUT_NOTIFY],
         {"notify_after": True}),
        ("- NOTIFY", [], {}),
        ("- counters (task_counts, task_tag_counts triggers)", [
            "ALTER TABLE tasks DISABLE TRIGGER tasks_count_writes",
            "ALTER TABLE tasks DISABLE TRIGGER tasks_count_changes"], {}),
        ("- task_tags (triggers)", [
            "ALTER TABLE tasks DISABLE TRIGGER tasks_tags_insert",
            "ALTER TABLE tasks DISABLE TRIGGER tasks_tags_update"], {}),
        ("- change trigger (tombstones, stamp check)", [
            "ALTER TABLE tasks DISABLE TRIGGER tasks_change_record"], {}),
        ("- GIN index on search", ["DROP INDEX ix_tasks_search"], {}),
        ("- sort and change indexes", [f"DROP INDEX {name}" for name in SORT_INDEXES], {}),
        ("- search column (= the ceiling's table, with CHECKs)",
         ["ALTER TABLE tasks DROP COLUMN search"], {}),
    ]


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def _measure(url: str, seconds: float, connections: int, many: bool,
                   quota: bool = False, notify_after: bool = False) -> tuple[float, ...]:
    pool = [await asyncpg.connect(url) for _ in range(connections)]
    pids = [await connection.fetchval("SELECT pg_backend_pid()") for connection in pool]
    base = f"writer-{uuid.uuid4().hex[:8]}"
    users = [f"{base}-{index}" if many else base for index in range(connections)]
    fields = {"title": "Load test task", "description": "Created by scripts/bench.py",
              "completed": False, "priority": "high",
              "due_date": dt.datetime(2030, 6, 1, tzinfo=dt.UTC), "tags": ["bench", "load"]}
    written: list[tuple[uuid.UUID, str]] = []

    async def phase(work: Callable[[asyncpg.Connection, int, int], Awaitable[None]]
                    ) -> tuple[float, float]:
        count = 0
        stop = time.monotonic() + seconds

        async def worker(index: int, connection: asyncpg.Connection) -> None:
            nonlocal count
            step = index
            while time.monotonic() < stop:
                await work(connection, index, step)
                if notify_after:
                    await connection.execute(NOTIFY_SQL, users[index])
                step += connections
                count += 1

        before, started = sum(_cpu(pid) for pid in pids), time.monotonic()
        await asyncio.gather(*(worker(i, c) for i, c in enumerate(pool)))
        elapsed = time.monotonic() - started
        return count / elapsed, (sum(_cpu(pid) for pid in pids) - before) / count * 1e6

    async def insert(connection: asyncpg.Connection, index: int, _step: int) -> None:
        task_id = uuid.uuid4()
        args = insert_args(task_id, users[index], fields)
        if quota:
            await connection.execute(QUOTA_INSERT_SQL, *args, 1_000_000)
        else:
            await connection.execute(INSERT_SQL, *args)
        written.append((task_id, users[index]))

    async def update(connection: asyncpg.Connection, _index: int, step: int) -> None:
        task_id, user = written[step % len(written)]
        await connection.execute(UPDATE_SQL, task_id, user, (step // len(written)) % 2 == 0)

    try:
        inserts = await phase(insert)
        updates = await phase(update)
        await pool[0].execute("DELETE FROM tasks WHERE user_id = ANY($1::text[])", users)
        await pool[0].execute("VACUUM ANALYZE")
        await pool[0].execute("CHECKPOINT")
    finally:
        for connection in pool:
            await connection.close()
    return (*inserts, *updates)


async def _run(url: str, args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(url)
    # A LISTEN connection, as the API's: the notifications are delivered and read.
    listener = await asyncpg.connect(url)
    await listener.add_listener("task_changes", lambda *_: None)
    try:
        rng, now = random.Random(7), dt.datetime.now(dt.UTC)
        for index in range(20):
            user = f"other-{index}"
            await copy_tasks(admin, [user], task_rows(user, 2_000, rng, now))
        await admin.execute("VACUUM ANALYZE")
        print(f"{args.connections} connections, {args.users} user(s), {args.seconds:g} s per "
              f"figure, two runs each; load average {os.getloadavg()[0]:.2f}\n")
        print("| schema | INSERT/s | INSERT CPU us | UPDATE/s | UPDATE CPU us |\n"
              "|---|---:|---:|---:|---:|", flush=True)
        for label, statements, how in steps():
            for statement in statements:
                await admin.execute(statement)
            await admin.execute("VACUUM ANALYZE")
            runs = [await _measure(url, args.seconds, args.connections, args.users == "many",
                                   **how) for _ in range(2)]
            cells = " | ".join(" / ".join(f"{run[i]:,.0f}" for run in runs) for i in range(4))
            print(f"| {label} | {cells} |", flush=True)
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    finally:
        await listener.close()
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--users", choices=("one", "many"), default="one")
    args = parser.parse_args()
    from impl.platform.embedded import pgserver_module

    with tempfile.TemporaryDirectory(prefix="task-api-write-parts-") as tmp:
        server = pgserver_module().get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            url = server.get_uri()
            upgrade(url)  # before the event loop: Alembic's env runs its own
            asyncio.run(_run(url, args))
        finally:
            server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
