"""Wake-ups sent after a write has committed: NOTIFY from a statement of its own, never from the
writing transaction.

PostgreSQL serialises the commits of every transaction that sent a notification: PreCommit_Notify
(async.c) takes a database-wide lock and holds it until the transaction ends, its commit's WAL
flush included. A NOTIFY sent inside each write made every writer of every user commit one at a
time (docs/perf/write-cost.md: 170-290 inserts/s against 680-840 with the NOTIFY sent after the
commit, 16 writers). A transaction that only notifies writes no WAL, so it holds that lock for
next to nothing.

The writes of this process name the keys (user ids) they changed; one statement at a time
notifies them, and the keys named while it runs, or until INTERVAL_SECONDS after it started, go
into the next one: when idle a write's wake-up goes at once, under load one statement carries
every write of the last few milliseconds: at most 1 / INTERVAL_SECONDS statements a second per
process, whatever the write rate (against one statement per write this measured alike at 16
writers, within the noise of a shared machine: docs/perf/write-cost.md; it bounds the cost at
higher rates). The caller does not wait for it. A wake-up that is lost (the process dies between the commit and the statement,
the database is unreachable for it) is made good by the readers' own poll
(impl/tasks/feed_watch.py): a notification only ever says "look again".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from impl.platform.database import Database

log = logging.getLogger("task_api.wake_ups")

STOP_SECONDS = 5.0  # at shutdown, how long the last wake-ups may take
# The least time between the starts of two statements: what a wake-up may wait under load.
INTERVAL_SECONDS = 0.005


class WakeUps:
    """`statement` takes the keys as its one parameter, a text[] ($1)."""

    def __init__(self, database: Database, statement: str,
                 interval_seconds: float = INTERVAL_SECONDS) -> None:
        self.database = database
        self.statement = statement
        self.interval = interval_seconds
        self._pending: set[str] = set()
        self._sending: asyncio.Task[None] | None = None
        self.statements = 0  # sent (for tests and the benchmark)
        self.keys = 0

    def send(self, keys: Iterable[str]) -> None:
        """Wake the readers of `keys`: call after the write has committed. Returns at once."""
        self._pending.update(keys)
        if self._pending and (self._sending is None or self._sending.done()):
            self._sending = asyncio.create_task(self._send_pending())

    async def _send_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            started = loop.time()
            keys, self._pending = sorted(self._pending), set()
            try:
                async with self.database.connection() as connection:
                    await connection.execute(self.statement, keys)
            except Exception as error:  # noqa: BLE001 - the readers' poll makes good a lost one
                log.warning("wake-ups for %d keys not sent (%s: %s); the readers' poll "
                            "delivers them", len(keys), type(error).__name__, error)
            else:
                self.statements += 1
                self.keys += len(keys)
            # The writes of the rest of the interval wait for the next statement; if none came,
            # the next write after it goes at once.
            wait = self.interval - (loop.time() - started)
            if wait > 0:
                await asyncio.sleep(wait)

    async def stop(self) -> None:
        """Send what is pending (bounded: the poll of the other replicas covers the rest)."""
        task = self._sending
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), STOP_SECONDS)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
