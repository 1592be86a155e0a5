"""Reminders: what the trigger schedules (relative ones move with the due date; completing or
deleting cancels; a time already past is not scheduled), and a due reminder delivered once, on
the live stream and in the change feed of a device that was offline, by the session server's
scheduler (REMINDER_POLL_SECONDS 1 s)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from tests.support.devices import Device
from tests.support.factories import User
from tests.support.live_client import Follower

DELIVERY_TIMEOUT = 30.0  # poll interval 1 s; generous for a busy CI machine


def at(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def create(client: httpx.AsyncClient, user: User, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/tasks", json={"title": "Call mum", **fields},
                                 headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def pending(db: asyncpg.Connection, task_id: str) -> list[datetime]:
    rows = await db.fetch("SELECT remind_at FROM task_reminders WHERE task_id = $1::uuid "
                          "AND fired_at IS NULL ORDER BY remind_at", task_id)
    return [row["remind_at"] for row in rows]


async def test_the_schedule_follows_the_task(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    due = datetime(2031, 5, 1, 12, tzinfo=UTC)
    task = await create(client, alice, due_date=at(due), reminders=[
        {"minutes_before": 60}, {"at": "2031-04-30T18:00:00Z"}, {"minutes_before": 60},
        {"at": "2020-01-01T00:00:00Z"},  # already past: kept, never fired
    ])
    assert len(task["reminders"]) == 3  # the duplicate merged
    assert await pending(db, task["id"]) == [datetime(2031, 4, 30, 18, tzinfo=UTC),
                                             due - timedelta(hours=1)]
    url = f"/api/tasks/{task['id']}"
    # Moving the due date moves the relative reminder only.
    moved = await client.patch(url, json={"due_date": "2031-05-02T12:00:00Z"}, headers=alice.headers)
    assert moved.status_code == 200
    assert await pending(db, task["id"]) == [datetime(2031, 4, 30, 18, tzinfo=UTC),
                                             datetime(2031, 5, 2, 11, tzinfo=UTC)]
    # A title edit leaves the schedule alone (the trigger's WHEN skips it).
    before = await db.fetch("SELECT id FROM task_reminders WHERE task_id = $1::uuid", task["id"])
    await client.patch(url, json={"title": "Call mum back"}, headers=alice.headers)
    after = await db.fetch("SELECT id FROM task_reminders WHERE task_id = $1::uuid", task["id"])
    assert before == after
    # Completing cancels, reopening schedules again, deleting cancels.
    await client.patch(url, json={"completed": True}, headers=alice.headers)
    assert await pending(db, task["id"]) == []
    await client.patch(url, json={"completed": False}, headers=alice.headers)
    assert len(await pending(db, task["id"])) == 2
    assert (await client.delete(url, headers=alice.headers)).status_code == 204
    assert await pending(db, task["id"]) == []


async def test_a_due_reminder_reaches_the_stream_and_an_offline_device_once(
    client: httpx.AsyncClient, base_url: str, alice: User, db: asyncpg.Connection
) -> None:
    offline = Device(alice)
    await offline.sync(client)  # then it goes offline
    follower = Follower(base_url, alice.token)
    following = asyncio.create_task(follower.run())
    try:
        soon = datetime.now(UTC) + timedelta(seconds=3)
        task = await create(client, alice, due_date=at(soon + timedelta(minutes=5)),
                            reminders=[{"at": at(soon)}, {"minutes_before": 5}])
        # Both reminders are at `soon` (merged by the schedule: one instant, one event).
        assert len(await pending(db, task["id"])) == 1
        await follower.wait_for(lambda _: follower.reminders_due, DELIVERY_TIMEOUT)
        (due, arrived), = follower.reminders_due
        assert due["task_id"] == task["id"]
        assert datetime.fromisoformat(due["remind_at"]) == soon
        assert arrived >= datetime.fromisoformat(due["remind_at"]).timestamp() - 0.01
        # The device that was offline gets it on its next sync, once; and never again.
        pages = await offline.sync(client)
        delivered = [r for page in pages for r in page["reminders_due"]]
        assert [r["id"] for r in delivered] == [due["id"]]
        later = await offline.sync(client)
        assert all(page["reminders_due"] == [] for page in later)
        # A stream that reconnects after the event does not get it again.
        await asyncio.sleep(1.5)
        assert len(follower.reminders_due) == 1
        fired = await db.fetch("SELECT fired_at FROM task_reminders WHERE task_id = $1::uuid",
                               task["id"])
        assert len(fired) == 1 and fired[0]["fired_at"] is not None
    finally:
        follower.stop()
        following.cancel()
