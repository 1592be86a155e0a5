"""The change feed: what changed in one user's tasks since a sync token, in pages.

Every task row carries the id of the transaction that last wrote it (`change_xid`), and every
delete leaves a tombstone with its own (migration 0007: the column default, a trigger, written
in the same transaction as the change). A position (impl/tasks/sync_token.py) holds snapshots:

- `seen`: every change visible in this snapshot has been delivered;
- `target`: the snapshot this round catches up to, taken by the round's first page.

A round delivers D = {changes visible in `target`, not visible in `seen`}, in (change_xid, id)
order, a page at a time, each page continuing after the previous one's last key. When D is
exhausted the device has caught up: its token's `seen` becomes `target`.

Why snapshots and not "change_xid greater than the last one read" (the trap, tested in
tests/tasks/test_changes_order.py): transaction ids are handed out when a transaction first
writes, not when it commits. Transaction A takes xid 100, B takes 101; B commits, a device syncs
and reads B's change; A commits later. A counter would now skip A (100 < 101). PostgreSQL's MVCC
snapshot records exactly which transactions were still running when it was taken (its `xip`
list, and everything from `xmax` on): `pg_visible_in_snapshot(100, seen)` is false because A was
in progress when `seen` was taken, so A's change is delivered next time. Commit order, not id
order, is what a snapshot captures (PostgreSQL docs, "Transaction ID and Snapshot Information
Functions"; pg_current_snapshot() is the statement's own snapshot, the one its scan reads with).

D only shrinks while a round is paged: a change that commits after `target` is not visible in
it, and a task written again gets a newer change_xid that leaves D (it comes whole in the next
round, in its latest state), so keyset pages over D never skip or repeat an entry. A task is in
at most one page of a round, and in one place: a deleted task has no row, only its tombstone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from impl.platform.database import Database
from impl.platform.errors import SyncTokenExpired
from impl.platform.row_scope import as_caller
from impl.tasks.columns import FIELDS, select_list
from impl.tasks.sync_token import SyncPosition

NIL = uuid.UUID(int=0)  # below every task id (uuid4 is never nil)

# One round trip: the round's target snapshot (the statement's own, on a round's first page),
# the database's clock, whether the token's snapshot is from the future (a database reset or
# restored from a backup), then up to $6 changes after the key ($4, $5) in (change_xid, id)
# order, merged from the tasks, the tombstones and the fired reminders (migration 0008), each
# read in that order from its index (ix_tasks_user_change, the tombstones' primary key,
# ix_task_reminders_user_change). A task's fields are fetched by id.
# Generic plans (impl/platform/database.py): every bound is an index condition whatever the
# values; on a first sync `seen` is NULL and every task is new.
_CHANGE_KEYS = """
    (SELECT t.change_xid, t.id, NULL::timestamptz AS deleted_at,
            NULL::uuid AS reminder_task_id, NULL::timestamptz AS remind_at,
            NULL::timestamptz AS fired_at
     FROM tasks t
     WHERE t.user_id = $1 AND (t.change_xid, t.id) > ($4::text::xid8, $5::uuid)
       AND t.change_xid < pg_snapshot_xmax(r.target)
       AND pg_visible_in_snapshot(t.change_xid, r.target)
       AND NOT coalesce(pg_visible_in_snapshot(t.change_xid, r.seen), false)
     ORDER BY t.change_xid, t.id LIMIT $6)
    UNION ALL
    (SELECT d.change_xid, d.task_id, d.deleted_at, NULL, NULL, NULL
     FROM task_tombstones d
     WHERE r.seen IS NOT NULL
       AND d.user_id = $1 AND (d.change_xid, d.task_id) > ($4::text::xid8, $5::uuid)
       AND d.change_xid < pg_snapshot_xmax(r.target)
       AND pg_visible_in_snapshot(d.change_xid, r.target)
       AND NOT pg_visible_in_snapshot(d.change_xid, r.seen)
     ORDER BY d.change_xid, d.task_id LIMIT $6)
    UNION ALL
    (SELECT m.change_xid, m.id, NULL, m.task_id, m.remind_at, m.fired_at
     FROM task_reminders m
     WHERE r.seen IS NOT NULL AND m.change_xid IS NOT NULL
       AND m.user_id = $1 AND (m.change_xid, m.id) > ($4::text::xid8, $5::uuid)
       AND m.change_xid < pg_snapshot_xmax(r.target)
       AND pg_visible_in_snapshot(m.change_xid, r.target)
       AND NOT pg_visible_in_snapshot(m.change_xid, r.seen)
     ORDER BY m.change_xid, m.id LIMIT $6)
    ORDER BY 1, 2 LIMIT $6
"""
# Whether anything committed after a continued round's target (on a round's first page the
# target is the statement's own snapshot: nothing is newer). A round that ends says `has_more`
# then, so a device that stops at `has_more: false` has every change committed before that
# response, not only those before its round began.
_NEWER = """
    ($3::text IS NOT NULL AND (
        EXISTS (SELECT 1 FROM tasks n WHERE n.user_id = $1
                AND n.change_xid >= pg_snapshot_xmin(r.target)
                AND NOT pg_visible_in_snapshot(n.change_xid, r.target))
        OR EXISTS (SELECT 1 FROM task_tombstones n WHERE n.user_id = $1
                   AND n.change_xid >= pg_snapshot_xmin(r.target)
                   AND NOT pg_visible_in_snapshot(n.change_xid, r.target))
        OR EXISTS (SELECT 1 FROM task_reminders n WHERE n.user_id = $1
                   AND n.change_xid >= pg_snapshot_xmin(r.target)
                   AND NOT pg_visible_in_snapshot(n.change_xid, r.target))))
"""
PAGE_SQL = f"""
WITH r AS (
    SELECT coalesce($3::text::pg_snapshot, pg_current_snapshot()) AS target,
           $2::text::pg_snapshot AS seen
)
SELECT r.target::text AS round_target, now() AS database_now,
       coalesce(pg_snapshot_xmax(r.seen) > pg_snapshot_xmax(pg_current_snapshot()), false)
           AS from_the_future,
       {_NEWER} AS newer_changes,
       c.change_xid::text AS change_xid, c.id AS change_id, c.deleted_at,
       c.reminder_task_id, c.remind_at, c.fired_at,
       t.*
FROM r
LEFT JOIN LATERAL ({_CHANGE_KEYS}) c ON true
-- Each task by its primary key. LIMIT 1 keeps the subquery a lateral lookup per change: joined
-- plainly, the planner may read all of the user's tasks and filter them.
LEFT JOIN LATERAL (
    SELECT {select_list()} FROM tasks
    WHERE id = c.id AND user_id = $1 AND c.deleted_at IS NULL AND c.remind_at IS NULL LIMIT 1
) t ON true
WHERE {as_caller("$1")}
ORDER BY c.change_xid, c.id
"""


@dataclass
class ChangePage:
    tasks: list[dict[str, Any]]
    deleted: list[dict[str, Any]]
    reminders_due: list[dict[str, Any]]
    position: SyncPosition  # where the next call starts
    has_more: bool

    def contents(self) -> dict[str, Any]:
        """As the contract's TaskChanges: the feed's `data`, a `changes` event's data."""
        return {"tasks": self.tasks, "deleted": self.deleted, "reminders_due": self.reminders_due}


def _start_key(position: SyncPosition | None) -> tuple[str, uuid.UUID]:
    """The key the page starts after: the round's last delivered one, else just below the
    oldest transaction `seen` did not see (its xmin), else the very beginning."""
    if position is not None and position.after is not None:
        return position.after
    if position is not None and position.seen is not None:
        xmin = int(position.seen.split(":", 1)[0])
        return str(xmin), NIL
    return "0", NIL


class ChangeFeed:
    def __init__(self, database: Database, retention_seconds: int) -> None:
        self.database = database
        self.retention = timedelta(seconds=retention_seconds)

    async def purge_tombstones(self) -> int:
        """Delete the tombstones and fired reminders that no unexpired token needs. A token is honoured while its
        snapshot is younger than the retention; a tombstone's deleted_at is its transaction's
        start, which can precede its commit by at most one statement's time (every delete is
        one statement, bounded by DB_COMMAND_TIMEOUT_SECONDS): kept that much longer, a
        tombstone is never purged while a token that has not seen it is still valid."""
        margin = timedelta(seconds=self.database.settings.db_command_timeout_seconds + 1)
        async with self.database.connection() as connection:
            # Across users: through the door of migration 0011 (the API's role sees only the
            # caller's rows, and a purge has no caller). Fired reminders are in the feed like
            # tombstones, purged by the same rule.
            purged: int = await connection.fetchval(
                "SELECT task_api_purge_changes($1::interval)", self.retention + margin
            )
        return purged

    async def page(
        self, *, user_id: str, position: SyncPosition | None, limit: int
    ) -> ChangePage:
        after_xid, after_id = _start_key(position)
        seen = position.seen if position else None
        target = position.target if position else None
        async with self.database.connection() as connection:
            records = await connection.fetch(
                PAGE_SQL, user_id, seen, target, after_xid, after_id, limit + 1
            )
        head = records[0]
        now: datetime = head["database_now"]
        needs_since = position.needs_since if position is not None else None
        if head["from_the_future"] or (
            needs_since is not None and now - needs_since > self.retention
        ):
            raise SyncTokenExpired(
                "The sync token has expired (changes are kept "
                f"{_duration(self.retention)}): sync again without a token"
            )
        found = [record for record in records if record["change_id"] is not None]
        full = len(found) > limit
        has_more = full or head["newer_changes"]
        found = found[:limit]
        tasks, deleted, reminders_due = [], [], []
        for record in found:
            if record["deleted_at"] is not None:
                deleted.append({"id": record["change_id"], "deleted_at": record["deleted_at"]})
            elif record["remind_at"] is not None:
                reminders_due.append({
                    "id": record["change_id"], "task_id": record["reminder_task_id"],
                    "remind_at": record["remind_at"], "fired_at": record["fired_at"],
                })
            else:
                tasks.append({name: record[name] for name in FIELDS})
        # A round that starts with this page has this statement's snapshot and clock.
        target_at = position.target_at if position and position.target else now
        if full:
            last = found[-1]
            next_position = SyncPosition(
                seen=seen, seen_at=position.seen_at if position else None,
                target=head["round_target"], target_at=target_at,
                after=(last["change_xid"], last["change_id"]),
            )
        else:  # the round is over: every change visible in its target has been delivered
            next_position = SyncPosition(seen=head["round_target"], seen_at=target_at)
        return ChangePage(tasks=tasks, deleted=deleted, reminders_due=reminders_due,
                          position=next_position, has_more=has_more)


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400} days"
    return f"{seconds} s"
