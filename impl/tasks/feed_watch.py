"""Each replica looks in the change feed about once a second for the users whose streams it holds,
and wakes those whose tasks changed: the bound on a change that no notification announced.

The API's own writes NOTIFY after they commit (impl/platform/wake_ups.py, migration 0010). A
write by anyone else (psql, the seed, a migration) sends none, and neither does one whose process
died between its commit and its NOTIFY: without this poll, a stream that is listening would not
see such a change until another write of its user woke it. So every WATCH_SECONDS one statement
per replica (not per stream) asks, for every user with a stream open here, whether anything
changed that the previous poll's snapshot did not see: a task written, a tombstone, a reminder
fired (the three sources of the feed, impl/tasks/changes.py, each by its (user_id, change_xid)
index). It wakes those users' streams, which read the feed themselves as on a notification:
the feed's order and exactly-once delivery are the feed's (snapshots), never this poll's.

No gap between polls: the statement's own snapshot (pg_current_snapshot(), the one its scans
read with) is the next poll's "previous". A change it saw committed is found by it; one that
commits after it is not visible in it, so the next poll finds it. A stream opened between two
polls read the feed itself after registering; the next poll may wake it once for nothing.

Bound: a change committed by any writer reaches the open streams of its user within
WATCH_SECONDS plus one poll and one feed read, while the replica reaches the database.
"""

from __future__ import annotations

from impl.platform.database import Database
from impl.platform.notifications import Notifications

WATCH_SECONDS = 1.0

# $1 the users with open streams, $2 the previous poll's snapshot (text). Across users, so
# through a door of migration 0011 (the API's role sees only a caller's rows), which runs the
# statement this module describes: the door's text is the migration's.
CHANGED_SQL = "SELECT snapshot, changed FROM task_api_changed_users($1::text[], $2::text)"
SNAPSHOT_SQL = "SELECT pg_current_snapshot()::text"


class FeedWatch:
    def __init__(self, database: Database, notifications: Notifications) -> None:
        self.database = database
        self.notifications = notifications
        self._seen: str | None = None  # the previous poll's snapshot
        self.polls = 0
        self.woken = 0  # users woken (for tests)

    async def poll(self) -> None:
        """One look (run every WATCH_SECONDS by the app)."""
        users = self.notifications.waiting_keys()
        async with self.database.connection() as connection:
            if self._seen is None or not users:
                # Nothing to compare with, or nobody to wake: only the starting point. A stream
                # opened after it reads the feed itself; the next poll looks from here.
                self._seen = await connection.fetchval(SNAPSHOT_SQL)
                return
            record = await connection.fetchrow(CHANGED_SQL, users, self._seen)
        self._seen = record["snapshot"]
        self.polls += 1
        for user in record["changed"]:
            self.woken += 1
            self.notifications.wake(user)
