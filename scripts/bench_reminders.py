"""How many reminders one scheduler fires a second, and what a claim costs the database.

    .venv/bin/python scripts/bench_reminders.py [--reminders 50000] [--users 1000] [--batch 500]

Starts a private PostgreSQL (pgserver, temporary directory), migrates it to head, inserts
`--reminders` tasks spread over `--users` users, each with one reminder due two seconds later
(the trigger schedules them, as for the API's writes), waits until they are all due, then runs
the scheduler's fire_due (impl/tasks/reminder_scheduler.py) alone until none is pending. Prints
the reminders fired per second (wall time) and the database's CPU per reminder (its backend's
/proc/<pid>/stat), with the load average: on a shared machine the CPU figure moves less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from impl.platform.database import Database
from impl.platform.embedded import pgserver_module
from impl.platform.migrate import upgrade
from impl.platform.settings import Settings
from impl.tasks.reminder_scheduler import ReminderScheduler

TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def run(url: str, reminders: int, users: int, batch: int) -> None:
    connection = await asyncpg.connect(url)
    await connection.execute(
        """
        INSERT INTO tasks (id, user_id, title, reminders)
        SELECT gen_random_uuid(), 'bench-user-' || (n % $2), 'task ' || n,
               jsonb_build_array(jsonb_build_object('at', to_char(
                   (now() + interval '2 seconds') AT TIME ZONE 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
        FROM generate_series(1, $1) AS n
        """,
        reminders, users,
    )
    await connection.execute("VACUUM ANALYZE task_reminders")
    await asyncio.sleep(2.5)
    settings = Settings(database_url=url, db_pool_min_size=1, db_pool_max_size=1)  # type: ignore[call-arg]
    database = Database(url, settings)
    await database.open()
    scheduler = ReminderScheduler(database, poll_seconds=1.0, batch_size=batch)
    async with database.connection() as scheduler_connection:
        pid = scheduler_connection.get_server_pid()
    cpu_before, began = backend_cpu_seconds(pid), time.monotonic()
    await scheduler.fire_due()
    elapsed, cpu = time.monotonic() - began, backend_cpu_seconds(pid) - cpu_before
    fired = await connection.fetchval("SELECT count(*) FROM task_reminders WHERE fired_at IS NOT NULL")
    await database.close()
    await connection.close()
    print(f"{fired:,} reminders fired by one scheduler in {elapsed:.2f} s: "
          f"{fired / elapsed:,.0f} a second; database CPU {cpu / fired * 1e6:.0f} us a reminder "
          f"(batches of {batch}; load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reminders", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    pgserver = pgserver_module()
    with tempfile.TemporaryDirectory(prefix="bench-reminders-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            url = server.get_uri()
            upgrade(url)
            asyncio.run(run(url, args.reminders, args.users, args.batch))
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
