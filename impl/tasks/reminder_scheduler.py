"""Fires the reminders that came due, in every replica, each exactly once.

Engine: PostgreSQL row locks with FOR UPDATE SKIP LOCKED on our own table, not a job queue
(procrastinate, pgqueuer). A reminder is not a job to run but a row to stamp: the task's trigger
schedules, moves and cancels it in the task write's own transaction (migration 0008), and firing
is one UPDATE that marks it fired and gives it the firing transaction's id (the change feed reads
it by that, like a tombstone); its users' streams are woken once it has committed. A queue would keep a second copy of
each reminder in its own tables, to be moved and cancelled whenever a task's due date or
reminders change.

Exactly once as a client sees it: a claim locks due rows that no other replica holds (SKIP
LOCKED), and marks them fired in the same statement; a replica that dies mid-claim (SIGKILL,
lost network) never commits, PostgreSQL rolls back and releases the rows when its connection
ends, and the next replica's poll fires them. Each fired reminder has one id in the feed and on
the stream, which a client can deduplicate on. A reminder due while the database was down fires
when it is back (every claim takes all that are due, however late).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from impl.platform.database import Database
from impl.platform.wake_ups import WakeUps

log = logging.getLogger("task_api.reminders")

# Across users, so through the doors of migration 0011 (the API's role sees only a caller's
# rows). One statement: claim up to $1 due reminders no other replica holds, stamp them fired
# with this transaction's id and record a `reminder.due` webhook event for each subscribed
# endpoint. No NOTIFY in it: PostgreSQL would serialise its commit with every other notifying
# one (migration 0010); the streams and the webhook workers are woken after it commits
# (wake_ups). The door's text is the migration's.
CLAIM_SQL = "SELECT * FROM task_api_claim_reminders($1)"
# Seconds until the next pending reminder (negative: one is due), by the pending index.
NEXT_DUE_SQL = "SELECT task_api_next_reminder_in()"

Fired = list[dict[str, Any]]


class ReminderScheduler:
    def __init__(
        self,
        database: Database,
        poll_seconds: float,
        batch_size: int,
        on_fired: Callable[[Fired], Awaitable[None]] | None = None,
        wake_ups: WakeUps | None = None,
    ) -> None:
        self.database = database
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.on_fired = on_fired  # after commit: metrics, logs
        self.wake_ups = wake_ups  # after commit: the users' streams and webhook workers

    async def fire_due(self) -> float:
        """Fire every reminder that is due, a batch per transaction; the seconds until the
        next pending one (at most the poll interval: one may be written meanwhile)."""
        while True:
            async with self.database.connection() as connection:
                records = await connection.fetch(CLAIM_SQL, self.batch_size)
            if records:
                if self.wake_ups is not None:
                    self.wake_ups.send(record["user_id"] for record in records)
                fired = [dict(record) for record in records]
                log.debug("fired %d reminders", len(fired))
                if self.on_fired is not None:
                    await self.on_fired(fired)
            if len(records) < self.batch_size:
                break
        async with self.database.connection() as connection:
            wait: float | None = await connection.fetchval(NEXT_DUE_SQL)
        return self.poll_seconds if wait is None else min(wait, self.poll_seconds)
