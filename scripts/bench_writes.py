"""What each part of migrations 0004 to 0007 costs a write: the database's CPU time per
INSERT, per UPDATE of `completed`, per UPDATE of `title` (a PATCH of each) and per DELETE of one
task, with the schema of 0003 and then each part added in turn, on the same data.

    .venv/bin/python scripts/bench_writes.py [--statements 2000] [--rounds 5] [--from-step 0006]

It starts a private PostgreSQL (pgserver, temporary directory), loads 60,000 realistic tasks
(bench/data.py), and makes one database per step from a template of the previous one. The
figure is the CPU time of the PostgreSQL backend process (/proc/<pid>/stat) divided by the
statements it ran, autocommit, like the API: on a machine shared with other work it moves much
less than wall time. Each round measures every step once, in order; the median is printed.
Also the time `task-api migrate` takes from 0003 to head on that data.

Migration 0008 (recurrence and reminders) is added whole, measured with the store's statements
since (its insert, and the PATCH of `completed` claiming a recurring task's next occurrence), and
again on the same database with a relative reminder on every task (the trigger schedules it on
insert, cancels it on completion and delete).

Migrations 0009 (the webhook outbox's trigger; no subscriptions, as most users have none), 0010
(no NOTIFY in the writing transaction, counters in slots), 0011
(row-level security: its sort indexes on leakproof keys first, as a step of their own, then the
wall, measured as the API's role `task_api` with statements that name their caller, as the
store's do) and 0012 (task_words for `q`, the GIN index of `search` dropped) are added whole,
each with `alembic upgrade`.

Migration 0007 (change tracking) is added part by part too (the column and its index, the
tombstones, then the NOTIFY and the stamp check with UPDATEs that stamp change_xid, as the
store's do), and next to it two variants, each in a copy of the 0006 database: the first
design (a BEFORE UPDATE trigger stamping change_xid) and all of it in the statements (no
trigger). A connection LISTENs on the channel while the steps are measured,
as the API's listener does. `--from-step 0006` measures only the steps from the one whose label
holds "0006" (the older ones are still built).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alembic import command

from bench.cpu_share import process_cpu_seconds
from bench.data import copy_tasks, task_rows
from bench.sql import without_caller
from impl.platform.database import set_codecs
from impl.platform.embedded import api_role_url
from impl.platform.migrate import alembic_config, upgrade
from impl.platform.row_scope import as_caller
from impl.tasks.store import INSERT_SQL, insert_args

# The store's insert before migration 0008 (frozen here, as a migration is): its columns then.
INSERT_0007 = (
    "INSERT INTO tasks (id, user_id, title, description, completed, priority, due_date, tags, "
    "completed_at) VALUES ($1::uuid, $2::text, $3::text, $4::text, $5::boolean, "
    "$6::task_priority, $7::text::timestamptz, $8::text[], CASE WHEN $5 THEN now() END) "
    "RETURNING id, user_id"
)

UPDATE_SQL = (
    "UPDATE tasks SET completed = $3, completed_at = CASE WHEN $3 THEN COALESCE(completed_at, "
    "now()) END, version = version + 1, updated_at = now() WHERE id = $1 AND user_id = $2"
)
RETITLE_SQL = (
    "UPDATE tasks SET title = $3, version = version + 1, updated_at = now() "
    "WHERE id = $1 AND user_id = $2"
)
DELETE_SQL = "DELETE FROM tasks WHERE id = $1 AND user_id = $2"
CHANNEL = "task_changes"  # migration 0007's


@dataclass(frozen=True)
class Writes:
    """The four statements a step is measured with (the store's, or a variant's)."""

    insert: str = INSERT_0007
    update: str = UPDATE_SQL
    retitle: str = RETITLE_SQL
    delete: str = DELETE_SQL
    # Migration 0008's columns are there: the store's insert, and reminders on each task or not.
    recurrence_columns: bool = False
    reminders: tuple[dict[str, int], ...] = ()
    # Run as the API's role (migration 0011: held by row-level security), naming the caller.
    as_api: bool = False


_STAMP = ", change_xid = pg_current_xact_id() WHERE"
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', w.user_id) FROM w"
# 0007's work in the statements, no trigger: the UPDATEs set change_xid themselves ...
STAMPED = Writes(update=UPDATE_SQL.replace(" WHERE", _STAMP, 1),
                 retitle=RETITLE_SQL.replace(" WHERE", _STAMP, 1))
# ... and also NOTIFY, and the DELETE writes its tombstone (a CTE: still one statement).
IN_STATEMENTS = Writes(
    insert=f"WITH w AS ({INSERT_0007}) SELECT w.*, pg_notify('{CHANNEL}', w.user_id) FROM w",
    update=f"WITH w AS ({STAMPED.update} RETURNING user_id) {_NOTIFY}",
    retitle=f"WITH w AS ({STAMPED.retitle} RETURNING user_id) {_NOTIFY}",
    delete=(f"WITH w AS ({DELETE_SQL} RETURNING user_id, id), t AS (INSERT INTO task_tombstones "
            f"(user_id, task_id) SELECT user_id, id FROM w) {_NOTIFY}"),
)


def _migration(name: str = "0004_list_indexes") -> Any:
    path = REPO / f"impl/migrations/versions/{name}.py"
    spec = importlib.util.spec_from_file_location(f"migration_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rebuilt(indexes: dict[str, str]) -> list[str]:
    """Statements that (re)create each index `name` on tasks with its `columns`."""
    return [statement for name, columns in indexes.items() for statement in (
        f"DROP INDEX IF EXISTS {name}", f"CREATE INDEX {name} ON tasks ({columns})")]


def steps() -> dict[str, list[str]]:
    """0003, then the parts of 0004 one by one, then 0005 and 0006 (the last step is the
    head)."""
    m = _migration()
    tags = _migration("0005_task_tags")
    filtered = _migration("0006_sort_index_filters")
    counters = [
        *(f"ALTER TABLE task_counts ADD COLUMN {p}_completed bigint NOT NULL DEFAULT 0"
          for p in m.PRIORITIES),
        (
            "CREATE TABLE task_tag_counts (user_id text COLLATE \"C\" NOT NULL, tag varchar(32) "
            "NOT NULL, " + "".join(f"{n} bigint NOT NULL DEFAULT 0, " for n in m.COUNTS)
            + "PRIMARY KEY (user_id, tag))"
        ),
        "DROP TRIGGER tasks_count_changes ON tasks", m.TRIGGER_FUNCTION, m.COUNT_CHANGES_TRIGGER,
    ]
    search = f"GENERATED ALWAYS AS ({m.SEARCH_TERMS}) STORED"
    column = [*m.FUNCTIONS, f"ALTER TABLE tasks ADD COLUMN search tsvector NOT NULL {search}"]
    return {
        "0003 (before)": [],
        "+ sort indexes (one per key, two for due_date)": _rebuilt(m.SORT_INDEXES),
        "+ counters per priority and tag (trigger)": counters,
        "+ search column (generated tsvector)": column,
        "+ GIN index on search": ["CREATE INDEX ix_tasks_search ON tasks USING gin (search)"],
        "- GIN index on tags (= 0004)": ["DROP INDEX ix_tasks_tags"],
        "+ GIN pending list of at most 64 kB": [
            "ALTER INDEX ix_tasks_search SET (gin_pending_list_limit = 64)",
        ],
        "+ task_tags with word bits (trigger; = 0005)": [
            tags.BITS_FUNCTION, tags.TABLE, tags.FUNCTION, *tags.TRIGGERS, tags.BACKFILL,
        ],
        "+ priority and completed in the sort indexes (= 0006)": _rebuilt(
            {name: columns for name, (_, columns) in filtered.INDEXES.items()}
        ),
        **changes_steps(),
        **recurrence_steps(),
    }


def _changes_parts() -> dict[str, str]:
    """Migration 0007's statements, by what they are (taken from its upgrade())."""
    executed: list[str] = []
    module = _migration("0007_task_changes")
    module.op = _Recorder(executed)
    module.upgrade()
    parts: dict[str, str] = {}
    for statement in executed:
        text = " ".join(statement.split())
        key = next((k for k in ("TRIGGER tasks_change_record", "FUNCTION task_change_record",
                                "ADD COLUMN", "ix_tasks_user_change", "CREATE TABLE",
                                "ix_task_tombstones") if k in text), None)
        if key is None:
            raise RuntimeError(f"migration 0007: unexpected statement {text[:80]}")
        parts[key] = statement
    return parts


class _Recorder:
    def __init__(self, executed: list[str]) -> None:
        self.executed = executed

    def execute(self, statement: str) -> None:
        self.executed.append(statement)


TOMBSTONE_ONLY = """
    CREATE OR REPLACE FUNCTION task_change_record() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO task_tombstones (user_id, task_id) VALUES (OLD.user_id, OLD.id);
        RETURN NULL;
    END $$
"""
# The design first measured (commit 9e7bd88): a BEFORE UPDATE trigger stamped change_xid. Kept
# as a variant: with any BEFORE ROW UPDATE trigger PostgreSQL recomputes `search` on every update.
STAMP_TRIGGER = [
    """CREATE FUNCTION task_change_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.change_xid := pg_current_xact_id();
        RETURN NEW;
    END $$""",
    ("CREATE TRIGGER tasks_change_stamp BEFORE UPDATE ON tasks "
     "FOR EACH ROW EXECUTE FUNCTION task_change_stamp()"),
]
# The label of the step that completes 0007: from it on the UPDATEs must stamp (its trigger
# refuses those that do not), as the store's do.
MIGRATED_0007 = "(= 0007)"
MIGRATED_0008 = "(= 0008)"
# A PATCH of `completed` as the store sends it since 0008: it also claims the next occurrence's
# id of a recurring task (here none is recurring, as most are not).
CLAIMING_UPDATE = UPDATE_SQL.replace(
    " WHERE", ", next_occurrence_id = CASE WHEN NOT completed AND next_occurrence_id IS NULL "
    "AND recurrence IS NOT NULL THEN gen_random_uuid() ELSE next_occurrence_id END" + _STAMP, 1)
# The store's insert without the caller's condition (before migration 0011, as it was).
AS_0008 = Writes(insert=without_caller(INSERT_SQL), update=CLAIMING_UPDATE,
                 retitle=STAMPED.retitle, recurrence_columns=True)
# Since 0011: as `task_api`, each statement naming its caller (the store's insert has it).
_CALLER = f" AND {as_caller('$2')}"
AS_0011 = Writes(insert=INSERT_SQL, update=CLAIMING_UPDATE + _CALLER,
                 retitle=STAMPED.retitle + _CALLER, delete=DELETE_SQL + _CALLER,
                 recurrence_columns=True, as_api=True)
MIGRATED_0011 = "(= 0011)"
MIGRATED_0012 = "(= 0012)"
# Migration 0012's trigger deletes the words that go one statement each; as first written, in one
# statement (the last step, for the before and after in the same rounds).
_WORDS_DELETED_EACH = """
        FOREACH gone IN ARRAY old_words LOOP
            IF TG_OP = 'DELETE' OR NOT (gone = ANY (new_words)) THEN
                DELETE FROM task_words
                WHERE user_id = OLD.user_id AND word = gone AND task_id = OLD.id;
            END IF;
        END LOOP;"""
_WORDS_DELETED_AT_ONCE = """
        DELETE FROM task_words
        WHERE user_id = OLD.user_id AND task_id = OLD.id
          AND word = ANY (old_words) AND NOT (word = ANY (coalesce(new_words, '{}')));"""
# A step done by Alembic itself: the database is stamped at the previous revision first.
ALEMBIC = "alembic:"
WITH_REMINDER = "with a reminder 30 min before on each task"


def recurrence_steps() -> dict[str, list[str]]:
    """Migration 0008 whole (its columns and checks, task_reminders, the reminder triggers)."""
    executed: list[str] = []
    module = _migration("0008_recurrence_reminders")
    module.op = _Recorder(executed)
    module.upgrade()
    rls = _migration("0011_row_level_security")
    words = _migration("0012_task_words")
    assert _WORDS_DELETED_EACH in words.FUNCTION, "0012's trigger changed: update this script"
    return {
        f"+ recurrence, time zone, reminders {MIGRATED_0008}": executed,
        "+ webhook outbox trigger, no subscription (= 0009)": [f"{ALEMBIC}0008:0009"],
        "+ no NOTIFY in a write, counters in slots (= 0010)": [f"{ALEMBIC}0009:0010"],
        "+ sort indexes on leakproof keys (0011's indexes)": _rebuilt(
            {name: columns for name, (_, columns) in rls.INDEXES.items()}),
        f"+ row-level security, as task_api naming the caller {MIGRATED_0011}": [
            f"{ALEMBIC}0010:0011"],
        f"+ task_words, no GIN index on search {MIGRATED_0012}": [f"{ALEMBIC}0011:0012"],
        "0012 with task_words' first trigger (one DELETE by word = ANY)": [
            words.FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
            .replace(_WORDS_DELETED_EACH, _WORDS_DELETED_AT_ONCE, 1)],
    }


def changes_steps() -> dict[str, list[str]]:
    """Migration 0007 part by part, after 0006: the column (default: the inserting transaction)
    and its index; the tombstone table and an AFTER DELETE trigger that writes it; then the
    trigger as migrated (AFTER INSERT OR UPDATE OR DELETE: NOTIFY, and the stamp check), with
    the UPDATEs stamping change_xid as the store's do."""
    p = _changes_parts()
    return {
        "+ change_xid column and its index (0007)": [p["ADD COLUMN"], p["ix_tasks_user_change"]],
        "+ tombstones (AFTER DELETE trigger, 0007)": [
            p["CREATE TABLE"], p["ix_task_tombstones"], TOMBSTONE_ONLY,
            ("CREATE TRIGGER tasks_change_record AFTER DELETE ON tasks "
             "FOR EACH ROW EXECUTE FUNCTION task_change_record()")],
        f"+ NOTIFY on every write and UPDATEs stamping change_xid {MIGRATED_0007}": [
            "DROP TRIGGER tasks_change_record ON tasks", "DROP FUNCTION task_change_record()",
            p["FUNCTION task_change_record"], p["TRIGGER tasks_change_record"]],
    }


def variants() -> dict[str, tuple[list[str], Writes]]:
    """0007 done otherwise (each from the 0006 database)."""
    p = _changes_parts()
    base = [p["ADD COLUMN"], p["ix_tasks_user_change"], p["CREATE TABLE"],
            p["ix_task_tombstones"]]
    return {
        "0007 with a BEFORE UPDATE trigger stamping change_xid (the first design)": (
            [*base, *STAMP_TRIGGER, p["FUNCTION task_change_record"],
             p["TRIGGER tasks_change_record"]], STAMPED),
        "0007, all in the statements (stamp, tombstone and NOTIFY; no trigger)": (
            base, IN_STATEMENTS),
    }



Figures = tuple[float, float, float, float]


async def _measure(url: str, statements: int, writes: Writes) -> Figures:
    admin_url = url
    url = api_role_url(url) if writes.as_api else url
    connection = await asyncpg.connect(url)
    await set_codecs(connection)  # jsonb (reminders) as the API sends it
    listener = await asyncpg.connect(url)  # as the API's: NOTIFYs are delivered and read
    await listener.add_listener(CHANNEL, _ignore)
    try:
        pid = await connection.fetchval("SELECT pg_backend_pid()")
        user = f"writer-{uuid.uuid4().hex[:8]}"
        ids = [uuid.uuid4() for _ in range(statements)]
        start = process_cpu_seconds(pid)
        for index, task_id in enumerate(ids):
            fields = {
                "title": f"Email the quarterly report {index}",
                "description": "Keep the receipt for the expense report",
                "completed": False,
                "priority": "high",
                "due_date": dt.datetime.fromisoformat("2030-06-01T09:30:00+02:00"),
                "tags": ["work", "urgent"],
            }
            args = insert_args(task_id, user, {**fields, "recurrence": None, "time_zone": None,
                                               "reminders": list(writes.reminders)})
            await connection.execute(
                writes.insert, *(args if writes.recurrence_columns else args[:8]))
        inserted = process_cpu_seconds(pid)
        for task_id in ids:
            await connection.execute(writes.update, task_id, user, True)
        updated = process_cpu_seconds(pid)
        for index, task_id in enumerate(ids):
            await connection.execute(writes.retitle, task_id, user,
                                     f"Email the annual budget {index}")
        retitled = process_cpu_seconds(pid)
        for task_id in ids:
            await connection.execute(writes.delete, task_id, user)
        deleted = process_cpu_seconds(pid)
        admin = await asyncpg.connect(admin_url)  # the superuser: every row, and VACUUM
        try:
            for table in ("task_tombstones", "task_reminders"):
                if await admin.fetchval(f"SELECT to_regclass('{table}') IS NOT NULL"):
                    await admin.execute(f"DELETE FROM {table} WHERE user_id = $1", user)
            await admin.execute("VACUUM ANALYZE")
        finally:
            await admin.close()
        return ((inserted - start) / statements * 1e6, (updated - inserted) / statements * 1e6,
                (retitled - updated) / statements * 1e6, (deleted - retitled) / statements * 1e6)
    finally:
        await listener.close()
        await connection.close()


def _ignore(*_args: Any) -> None:
    pass


def _database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _load(url: str) -> None:
    rng, now = random.Random(7), dt.datetime.now(dt.UTC)
    connection = await asyncpg.connect(url)
    try:
        await copy_tasks(connection, ["big"], task_rows("big", 50_000, rng, now))
        for index in range(10):
            user = f"other-{index}"
            await copy_tasks(connection, [user], task_rows(user, 1_000, rng, now))
    finally:
        await connection.close()


async def _build(admin_url: str, base: str) -> list[tuple[str, str, Writes]]:
    """A database per step, each from the previous one; one per variant, from 0006's."""
    admin = await asyncpg.connect(admin_url)
    databases: list[tuple[str, str, Writes]] = []
    previous, head_0006 = base, base
    after_0008: Writes | None = None  # the statements of every step after 0008
    try:
        async def make(name: str, template: str, statements: list[str]) -> str:
            await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
            url = _database(admin_url, name)
            connection = await asyncpg.connect(url)
            try:
                for statement in statements:
                    if statement.startswith(ALEMBIC):  # "alembic:<from>:<to>"
                        stamp, target = statement[len(ALEMBIC):].split(":")
                        await connection.execute("UPDATE alembic_version SET version_num = $1",
                                                 stamp)
                        await asyncio.to_thread(
                            command.upgrade, alembic_config(url), target)
                    else:
                        await connection.execute(statement)
                await connection.execute("VACUUM ANALYZE")
            finally:
                await connection.close()
            return url

        for number, (label, statements) in enumerate(steps().items()):
            name = f"step{number}"
            if MIGRATED_0011 in label or MIGRATED_0012 in label:
                after_0008 = AS_0011
            writes = (STAMPED if MIGRATED_0007 in label else
                      AS_0008 if MIGRATED_0008 in label else
                      after_0008 if after_0008 is not None else Writes())
            databases.append((label, await make(name, previous, statements), writes))
            previous = name
            if "(= 0006)" in label:
                head_0006 = name
            if MIGRATED_0008 in label:
                after_0008 = AS_0008
            if MIGRATED_0008 in label:  # the same database, each task with a reminder
                databases.append((f"0008 {WITH_REMINDER}", _database(admin_url, name),
                                  replace(AS_0008, reminders=({"minutes_before": 30},))))
        for number, (label, (statements, writes)) in enumerate(variants().items()):
            databases.append((label, await make(f"variant{number}", head_0006, statements),
                              writes))
    finally:
        await admin.close()
    return databases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--from-step", default=None,
                        help="measure only from the step whose label holds this (e.g. 0006)")
    args = parser.parse_args()
    from impl.platform.embedded import pgserver_module

    pgserver = pgserver_module()

    with tempfile.TemporaryDirectory(prefix="task-api-writes-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            admin_url = server.get_uri()
            data_url = _database(admin_url, "data")
            asyncio.run(_create(admin_url, "data"))
            upgrade(data_url)
            asyncio.run(_load(data_url))
            command.downgrade(alembic_config(data_url), "0003")  # the same rows, at 0003
            asyncio.run(_vacuum(data_url))
            asyncio.run(_create(admin_url, "timed", template="data"))
            started = time.monotonic()
            upgrade(_database(admin_url, "timed"))
            migrate_s = time.monotonic() - started
            databases = asyncio.run(_build(admin_url, "data"))
            if args.from_step:
                first = next(i for i, (label, _, _) in enumerate(databases)
                             if args.from_step in label)
                databases = databases[first:]
            results: dict[str, list[Figures]] = {label: [] for label, _, _ in databases}
            for round_number in range(args.rounds):
                for label, url, writes in databases:
                    results[label].append(asyncio.run(_measure(url, args.statements, writes)))
                print(f"round {round_number + 1}/{args.rounds} done", flush=True)
        finally:
            server.cleanup()
    print(f"\nPostgreSQL backend CPU per statement (autocommit), median of {args.rounds} rounds "
          f"of {args.statements}; 61,000 tasks; 1-minute load average "
          f"{os.getloadavg()[0]:.2f}:\n")
    print("| schema | INSERT us | UPDATE (completed) us | UPDATE (title) us | DELETE us |\n"
          "|---|---:|---:|---:|---:|")
    for label, runs in results.items():
        insert, update, retitle, delete = (statistics.median(r[i] for r in runs)
                                           for i in range(4))
        print(f"| {label} | {insert:.0f} | {update:.0f} | {retitle:.0f} | {delete:.0f} |")
    print(f"\n`task-api migrate` 0003 -> head on those 61,000 tasks: {migrate_s:.1f} s")
    return 0


async def _create(admin_url: str, name: str, template: str | None = None) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        template_clause = f" TEMPLATE {template}" if template else ""
        await admin.execute(f"CREATE DATABASE {name}{template_clause}")
    finally:
        await admin.close()


async def _vacuum(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


if __name__ == "__main__":
    sys.exit(main())
