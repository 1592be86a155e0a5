"""The list query shapes the benchmark measures and tests/tasks/test_query_plans.py guards: each
filter alone, each sort in both directions, and the common combinations (limit 20)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    name: str  # the query string, as the tables show it
    params: dict[str, str]
    baseline: bool = False  # bench/baseline_app.py serves it too (default sort, status only)


def _instant(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


SORTS = ("-created_at", "created_at", "updated_at", "-updated_at", "due_date", "-due_date",
         "priority", "-priority", "title", "-title")


def anti_correlated(today: str) -> list[tuple[str, bool]]:
    """Every filter/sort pair where the filter can exclude the first rows of the sort, so that a
    walk in the sort's order passes many tasks before its first match (issue 33): a due range
    with each sort (due dates follow creation: the newest tasks are due later, the oldest were
    due long ago), completed tasks in due-date order both ways, and a rare tag that only old
    tasks carry (bench/data.py RARE_TAG) in the recent-first orders. The pairs already in the
    matrix are not repeated."""
    due = [f"{bound}={today}&sort={sort}" for bound in ("due_before", "due_after")
           for sort in SORTS if sort != "-created_at"]
    return [(query, False) for query in (
        *due, "status=completed&sort=due_date", "status=completed&sort=-due_date",
        "tag=archive", "tag=archive&sort=-updated_at", "tag=archive&sort=-due_date",
    )]


def matrix(now: dt.datetime) -> list[Shape]:
    """The shapes; due dates relative to `now` (the data's tasks were created up to `now`)."""
    today, week = _instant(now), _instant(now + dt.timedelta(days=7))
    queries = [
        ("", True), ("status=pending", True), ("status=completed", True),
        ("priority=high", False), ("tag=urgent", False), ("q=receipt", False),
        ("q=zzznomatch", False), (f"due_before={today}", False), (f"due_after={today}", False),
        *((f"sort={sort}", False) for sort in (
            "created_at", "updated_at", "-updated_at", "due_date", "-due_date", "priority",
            "-priority", "title", "-title",
        )),
        ("status=pending&sort=due_date", False),
        (f"status=pending&due_before={today}&sort=due_date", False),  # overdue
        (f"due_after={today}&due_before={week}&sort=due_date", False),  # due this week
        ("priority=high&q=report&sort=-updated_at", False),
        ("tag=urgent&sort=due_date", False),
        ("status=pending&priority=high", False),
        ("status=completed&tag=work&sort=-priority", False),
        ("q=report&sort=title", False),
        ("tag=home&q=rec", False),
        *anti_correlated(today),
    ]
    shapes = []
    for query, baseline in queries:
        params = dict(pair.split("=", 1) for pair in query.split("&")) if query else {}
        shapes.append(Shape(query or "(no filter: sort=-created_at)", params, baseline))
    return shapes
