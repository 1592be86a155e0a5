"""What each part of the schema costs writes that run concurrently, as the benchmark's do:
16 connections inserting, then updating `completed`, for 4 s each, with the schema as migrated
(as the API's role, held by row-level security, then as the superuser, whom it does not hold)
and then with one part after another taken away, down to the write ceiling's plain table.

    .venv/bin/python scripts/bench_write_parts.py [--seconds 4] [--connections 16] [--users one]

scripts/bench_writes.py measures the same parts one statement at a time; this one measures
them the way wrk loads the API: concurrent transactions, all of one user (`--users one`, the
benchmark's load: before migration 0010 they met on that user's counter rows) or each
connection its own user (`--users many`). Figures: statements per second (all connections) and
the PostgreSQL backends' CPU per statement (/proc). The first steps send the wake-ups as the API
does since migration 0010, after each write's commit from a statement of their own: one per
write, or coalesced (one statement at a time for all connections, impl/platform/wake_ups.py);
then the counters in one row per user again (0010's trigger with one slot: how writes of one
user queued before). It starts a private PostgreSQL (pgserver, temporary directory) with 40,000
tasks of 20 other users, and a LISTEN connection as the API's; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.cpu_share import process_cpu_seconds
from bench.data import copy_tasks, task_rows
from bench.private_postgres import private_postgres
from impl.platform.embedded import api_role_url
from impl.platform.migrate import MIGRATIONS
from impl.platform.row_scope import as_caller
from impl.tasks.change_wake_ups import WAKE_SQL
from impl.tasks.store import INSERT_SQL, QUOTA_INSERT_SQL, insert_args

UPDATE_SQL = (
    "UPDATE tasks SET completed = $3, completed_at = CASE WHEN $3 THEN COALESCE(completed_at, "
    "now()) END, version = version + 1, updated_at = now(), change_xid = pg_current_xact_id() "
    f"WHERE id = $1 AND user_id = $2 AND {as_caller('$2')}"  # as the store: names its caller
)
SORT_INDEXES = ("ix_tasks_user_completed_created", "ix_tasks_user_updated", "ix_tasks_user_due",
                "ix_tasks_user_due_desc", "ix_tasks_user_priority", "ix_tasks_user_title",
                "ix_tasks_user_change")


def _migration_0010() -> Any:
    path = next((MIGRATIONS / "versions").glob("0010_*.py"))
    spec = importlib.util.spec_from_file_location("migration_0010", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def steps() -> list[tuple[str, list[str], dict[str, Any]]]:
    """(label, statements that take the part away, how the writes are sent); each step keeps
    the previous ones' changes."""
    migration = _migration_0010()
    slotted = migration.SLOTTED_COUNTS_FUNCTION
    one_slot = slotted.replace(f"pg_backend_pid() % {migration.SLOTS}", "0")
    assert one_slot != slotted
    return [
        ("as migrated (0012), as task_api (the wall), quota, wake-ups coalesced (as the API)",
         [], {"quota": True, "wake_ups": "coalesced", "wall": True}),
        ("the same as the owner, a superuser (no wall)", [],
         {"quota": True, "wake_ups": "coalesced"}),
        ("a wake-up statement after each commit instead", [], {"quota": True, "wake_ups": "each"}),
        ("the counters in one row per user (one slot: as before 0010)", [one_slot],
         {"quota": True, "wake_ups": "coalesced"}),
        ("counters in slots again, the quota's insert, no wake-up", [slotted], {"quota": True}),
        ("the plain insert (no quota), no wake-up", [], {}),
        ("- counters (task_counts, task_tag_counts triggers)", [
            "ALTER TABLE tasks DISABLE TRIGGER tasks_count_writes",
            "ALTER TABLE tasks DISABLE TRIGGER tasks_count_changes"], {}),
        ("- task_tags (triggers)", [
            "ALTER TABLE tasks DISABLE TRIGGER tasks_tags_insert",
            "ALTER TABLE tasks DISABLE TRIGGER tasks_tags_update"], {}),
        ("- task_words (triggers, 0012)", [
            "ALTER TABLE tasks DISABLE TRIGGER tasks_words_insert",
            "ALTER TABLE tasks DISABLE TRIGGER tasks_words_update",
            "ALTER TABLE tasks DISABLE TRIGGER tasks_words_delete"], {}),
        ("- webhook trigger (a subscription probe per write)", [
            "ALTER TABLE tasks DISABLE TRIGGER tasks_webhook_event"], {}),
        ("- change trigger (tombstones, stamp check)", [
            "ALTER TABLE tasks DISABLE TRIGGER tasks_change_record",
            "ALTER TABLE tasks DISABLE TRIGGER tasks_change_stamp_check"], {}),
        ("- sort and change indexes", [f"DROP INDEX {name}" for name in SORT_INDEXES], {}),
        ("- search column (= the ceiling's table, with CHECKs)",
         ["ALTER TABLE tasks DROP COLUMN search"], {}),
    ]


class _Coalesced:
    """The API's wake-ups (impl/platform/wake_ups.py) on a connection of their own: one
    statement at a time, carrying every user named while the previous one ran."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection
        self.pending: set[str] = set()
        self.sending: asyncio.Task[None] | None = None
        self.statements = 0

    def send(self, user: str) -> None:
        self.pending.add(user)
        if self.sending is None or self.sending.done():
            self.sending = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while self.pending:
            users, self.pending = sorted(self.pending), set()
            await self.connection.execute(WAKE_SQL, users)
            self.statements += 1

    async def drain(self) -> None:
        if self.sending is not None:
            await self.sending


@asynccontextmanager
async def _connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()



async def _measure(url: str, seconds: float, connections: int, many: bool,
                   quota: bool = False, wake_ups: str | None = None,
                   wall: bool = False) -> tuple[float, ...]:
    # wall: the writers connect as the API's role, held by row-level security as the API is;
    # else as the embedded server's superuser, whom no policy holds. The statements name their
    # caller either way (impl/platform/row_scope.py).
    writer_url = api_role_url(url) if wall else url
    pool = [await asyncpg.connect(writer_url) for _ in range(connections + 1)]
    pids = [await connection.fetchval("SELECT pg_backend_pid()") for connection in pool]
    coalesced = _Coalesced(pool.pop())  # its backend's CPU counts too
    base = f"writer-{uuid.uuid4().hex[:8]}"
    users = [f"{base}-{index}" if many else base for index in range(connections)]
    fields = {"title": "Load test task", "description": "Created by scripts/bench.py",
              "completed": False, "priority": "high",
              "due_date": dt.datetime(2030, 6, 1, tzinfo=dt.UTC), "tags": ["bench", "load"],
              "recurrence": None, "time_zone": None, "reminders": "[]"}  # jsonb, no codec here
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
                if wake_ups == "each":
                    await connection.execute(WAKE_SQL, [users[index]])
                elif wake_ups == "coalesced":
                    coalesced.send(users[index])
                step += connections
                count += 1

        before, started = sum(process_cpu_seconds(pid) for pid in pids), time.monotonic()
        await asyncio.gather(*(worker(i, c) for i, c in enumerate(pool)))
        await coalesced.drain()
        elapsed = time.monotonic() - started
        after = sum(process_cpu_seconds(pid) for pid in pids)
        return count / elapsed, (after - before) / count * 1e6

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
    finally:
        for connection in [*pool, coalesced.connection]:
            await connection.close()
    async with _connected(url) as admin:  # the superuser: across users, VACUUM, CHECKPOINT
        await admin.execute("DELETE FROM tasks WHERE user_id = ANY($1::text[])", users)
        await admin.execute("VACUUM ANALYZE")
        await admin.execute("CHECKPOINT")
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
    with private_postgres("task-api-write-parts-") as url:
        asyncio.run(_run(url, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
