"""Recurring tasks through the HTTP API: completing one keeps it completed and creates exactly one
next occurrence in the same transaction, however the completion arrives (a replay, a PUT after a
PATCH, ten devices at once, a reopen and a second completion); COUNT ends the series; a changed
rule applies to the occurrences to come; every bad rule or combination is a 422 naming the field."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.factories import User

MONDAY_9_BERLIN = "2027-03-01T09:00:00+01:00"


async def create(client: httpx.AsyncClient, user: User, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/tasks", json={"title": "Water the plants", **fields},
                                 headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def patch(client: httpx.AsyncClient, user: User, task_id: str, **fields: Any) -> httpx.Response:
    return await client.patch(f"/api/tasks/{task_id}", json=fields, headers=user.headers)


async def series_of(db: asyncpg.Connection, user: User, series_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id::text, due_date, completed, recurrence, next_occurrence_id::text, title, "
        "tags, priority::text, description, reminders FROM tasks "
        "WHERE user_id = $1 AND series_id = $2::uuid ORDER BY due_date",
        user.id, series_id,
    )


async def weekly(client: httpx.AsyncClient, user: User, **fields: Any) -> dict[str, Any]:
    return await create(
        client, user, due_date=MONDAY_9_BERLIN, time_zone="Europe/Berlin",
        recurrence="FREQ=WEEKLY;BYDAY=MO", description="the ficus too", priority="high",
        tags=["home"], reminders=[{"minutes_before": 30}, {"at": "2027-02-28T20:00:00+01:00"}],
        **fields,
    )


async def test_completing_keeps_the_task_and_creates_the_next_occurrence(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    first = await weekly(client, alice)
    assert first["series_id"] == first["id"] and first["next_occurrence_id"] is None
    assert first["recurrence"] == "FREQ=WEEKLY;BYDAY=MO"
    assert first["reminders"] == [{"minutes_before": 30}, {"at": "2027-02-28T19:00:00Z"}]
    done = await patch(client, alice, first["id"], completed=True)
    assert done.status_code == 200, done.text
    completed = done.json()["data"]
    assert completed["completed"] is True and completed["next_occurrence_id"] is not None
    following = (await client.get(f"/api/tasks/{completed['next_occurrence_id']}",
                                  headers=alice.headers)).json()["data"]
    assert following["completed"] is False and following["series_id"] == first["id"]
    assert following["due_date"] == "2027-03-08T08:00:00+00:00"  # 09:00 Berlin, a week later
    for same in ("title", "description", "priority", "tags", "recurrence", "time_zone"):
        assert following[same] == first[same], same
    # The absolute reminder keeps its distance to the due date; the relative one follows it.
    assert following["reminders"] == [{"minutes_before": 30}, {"at": "2027-03-07T19:00:00Z"}]
    # History stays: the completed one is listed and counted.
    listed = (await client.get("/api/tasks", params={"status": "completed"},
                               headers=alice.headers)).json()["data"]
    assert [task["id"] for task in listed] == [first["id"]]
    stats = (await client.get("/api/tasks/stats", headers=alice.headers)).json()["data"]
    assert (stats["total"], stats["completed"]) == (2, 1)


async def test_exactly_one_next_occurrence_however_the_completion_arrives(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    first = await weekly(client, alice)
    # Ten devices complete it at once, through PATCH and PUT.
    body = {key: first[key] for key in ("title", "description", "priority", "due_date", "tags",
                                         "recurrence", "time_zone", "reminders")}
    answers = await asyncio.gather(
        *(patch(client, alice, first["id"], completed=True) for _ in range(5)),
        *(client.put(f"/api/tasks/{first['id']}", json={**body, "completed": True},
                     headers=alice.headers) for _ in range(5)),
    )
    assert [answer.status_code for answer in answers] == [200] * 10
    assert len(await series_of(db, alice, first["id"])) == 2
    # A replay, a PUT after the PATCH, a reopen and a second completion: still one.
    assert (await patch(client, alice, first["id"], completed=True)).status_code == 200
    reopened = await patch(client, alice, first["id"], completed=False)
    assert reopened.json()["data"]["completed"] is False
    again = await patch(client, alice, first["id"], completed=True)
    assert again.status_code == 200
    rows = await series_of(db, alice, first["id"])
    assert len(rows) == 2
    assert again.json()["data"]["next_occurrence_id"] == rows[1]["id"]


async def test_count_ends_the_series_and_the_last_one_makes_none(
    client: httpx.AsyncClient, alice: User, db: asyncpg.Connection
) -> None:
    task = await create(client, alice, due_date="2027-03-01T10:00:00Z", time_zone="UTC",
                        recurrence="FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH;COUNT=3")
    dues = []
    while task is not None:
        dues.append(task["due_date"])
        done = (await patch(client, alice, task["id"], completed=True)).json()["data"]
        following = done["next_occurrence_id"]
        task = (await client.get(f"/api/tasks/{following}", headers=alice.headers)).json()["data"] \
            if following else None
    assert dues == ["2027-03-01T10:00:00+00:00", "2027-03-04T10:00:00+00:00",
                    "2027-03-15T10:00:00+00:00"]
    rows = await db.fetch("SELECT count(*) AS n FROM tasks WHERE user_id = $1", alice.id)
    assert rows[0]["n"] == 3


async def test_a_changed_rule_applies_to_the_occurrences_to_come(
    client: httpx.AsyncClient, alice: User
) -> None:
    task = await weekly(client, alice)
    changed = await patch(client, alice, task["id"], recurrence="FREQ=MONTHLY;BYMONTHDAY=-1")
    assert changed.status_code == 200, changed.text
    done = (await patch(client, alice, task["id"], completed=True)).json()["data"]
    following = (await client.get(f"/api/tasks/{done['next_occurrence_id']}",
                                  headers=alice.headers)).json()["data"]
    assert following["due_date"] == "2027-03-31T07:00:00+00:00"  # 09:00 summer time in Berlin
    assert following["recurrence"] == "FREQ=MONTHLY;BYMONTHDAY=-1"
    # Turned off, the next completion makes nothing.
    plain = await create(client, alice, due_date="2027-03-01T10:00:00Z", time_zone="UTC",
                         recurrence="FREQ=DAILY")
    assert (await patch(client, alice, plain["id"], recurrence=None)).status_code == 200
    done = (await patch(client, alice, plain["id"], completed=True)).json()["data"]
    assert done["next_occurrence_id"] is None


async def test_a_completion_that_also_changes_the_rule_follows_the_rule_it_writes(
    client: httpx.AsyncClient, alice: User, bob: User, db: asyncpg.Connection
) -> None:
    """A completion runs alone when the task's rule after the write is none, else in the
    transaction that writes the next occurrence (TaskStore._complete): each way, and the
    refusals of both."""
    plain = await create(client, alice, due_date="2027-03-01T10:00:00Z", time_zone="UTC")
    made_recurring = await patch(client, alice, plain["id"], completed=True,
                                 recurrence="FREQ=DAILY")
    assert made_recurring.status_code == 200, made_recurring.text
    following = made_recurring.json()["data"]["next_occurrence_id"]
    assert following is not None
    assert len(await series_of(db, alice, plain["id"])) == 2

    recurring = await weekly(client, alice)
    ended = await patch(client, alice, recurring["id"], completed=True, recurrence=None)
    assert ended.status_code == 200, ended.text
    assert ended.json()["data"]["completed"] is True
    assert ended.json()["data"]["next_occurrence_id"] is None
    assert len(await series_of(db, alice, recurring["id"])) == 1

    once = await create(client, alice)
    url = f"/api/tasks/{once['id']}"
    stale = await client.patch(url, json={"completed": True},
                               headers={**alice.headers, "If-Match": '"7"'})
    assert stale.status_code == 412, stale.text
    foreign = await client.patch(url, json={"completed": True}, headers=bob.headers)
    assert foreign.status_code == 403, foreign.text
    done = await client.patch(url, json={"completed": True},
                              headers={**alice.headers, "If-Match": '"1"'})
    assert done.status_code == 200, done.text
    data = done.json()["data"]
    assert (data["completed"], data["version"], data["next_occurrence_id"]) == (True, 2, None)
    assert data["completed_at"] is not None
    rows = await db.fetch("SELECT completed, version FROM tasks WHERE id = $1::uuid", once["id"])
    assert [tuple(row) for row in rows] == [(True, 2)]


@pytest.mark.parametrize(("fields", "field", "says"), [
    ({"recurrence": "FREQ=HOURLY", "due_date": MONDAY_9_BERLIN, "time_zone": "UTC"},
     "body.recurrence", "FREQ=HOURLY is not supported"),
    ({"recurrence": "FREQ=DAILY;BYHOUR=9", "due_date": MONDAY_9_BERLIN, "time_zone": "UTC"},
     "body.recurrence", "BYHOUR is not supported"),
    ({"recurrence": "FREQ=DAILY", "due_date": MONDAY_9_BERLIN, "time_zone": "Mars/Olympus"},
     "body.time_zone", "Unknown time zone"),
    ({"recurrence": "FREQ=DAILY", "time_zone": "UTC"}, "body.recurrence", "needs a due_date"),
    ({"recurrence": "FREQ=DAILY", "due_date": MONDAY_9_BERLIN}, "body.recurrence", "time_zone"),
    ({"reminders": [{"minutes_before": 10}]}, "body.reminders", "needs the task to have a due_date"),
    ({"reminders": [{"at": "2027-02-30T10:00:00Z"}]}, "body.reminders.0.at", "RFC 3339"),
])
async def test_bad_rules_zones_and_reminders_are_a_422_naming_the_field(
    client: httpx.AsyncClient, alice: User, fields: dict[str, Any], field: str, says: str
) -> None:
    response = await client.post("/api/tasks", json={"title": "x", **fields}, headers=alice.headers)
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert any(d["field"] == field and says in d["message"] for d in details), details


@pytest.mark.parametrize("reminder", [
    {"at": "2027-03-01T10:00:00Z", "minutes_before": 5}, {}, {"minutes_before": -1},
    {"minutes_before": 40321}, {"in": 5},
])
async def test_a_reminder_is_exactly_one_of_at_or_minutes_before(
    client: httpx.AsyncClient, alice: User, reminder: dict[str, Any]
) -> None:
    response = await client.post(
        "/api/tasks", json={"title": "x", "due_date": MONDAY_9_BERLIN, "reminders": [reminder]},
        headers=alice.headers)
    assert response.status_code == 422, response.text


async def test_a_patch_cannot_leave_a_recurring_task_without_its_due_date(
    client: httpx.AsyncClient, alice: User
) -> None:
    task = await weekly(client, alice)
    response = await patch(client, alice, task["id"], due_date=None)
    assert response.status_code == 422
    (detail,) = response.json()["error"]["details"]
    assert detail["field"] == "body.recurrence" and "due_date" in detail["message"]
    assert (await patch(client, alice, task["id"], time_zone=None)).status_code == 422
    # Nothing changed.
    same = (await client.get(f"/api/tasks/{task['id']}", headers=alice.headers)).json()["data"]
    assert same["version"] == task["version"]


async def test_a_missing_local_time_keeps_its_wall_clock_through_the_series(
    client: httpx.AsyncClient, alice: User
) -> None:
    """02:30 every day in Berlin: on 29 March 2026 it is due at 03:30 summer time (the offset
    before the gap), and the day after at 02:30 again, not 03:30."""
    task = await create(client, alice, due_date="2026-03-28T02:30:00+01:00",
                        time_zone="Europe/Berlin", recurrence="FREQ=DAILY")
    dues = []
    for _ in range(3):
        dues.append(task["due_date"])
        done = (await patch(client, alice, task["id"], completed=True)).json()["data"]
        task = (await client.get(f"/api/tasks/{done['next_occurrence_id']}",
                                 headers=alice.headers)).json()["data"]
    assert dues == ["2026-03-28T01:30:00+00:00", "2026-03-29T01:30:00+00:00",
                    "2026-03-30T00:30:00+00:00"]


async def test_a_recurring_task_past_due_moves_on_from_its_due_date(
    client: httpx.AsyncClient, alice: User
) -> None:
    """The next occurrence follows the completed one's due date, not the completion time: a
    weekly task completed late is next due a week after its own due date."""
    due = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
    task = await create(client, alice, due_date=due.isoformat(), time_zone="UTC",
                        recurrence="FREQ=WEEKLY")
    done = (await patch(client, alice, task["id"], completed=True)).json()["data"]
    following = (await client.get(f"/api/tasks/{done['next_occurrence_id']}",
                                  headers=alice.headers)).json()["data"]
    assert datetime.fromisoformat(following["due_date"]) == due + timedelta(weeks=1)
