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
    ]
    shapes = []
    for query, baseline in queries:
        params = dict(pair.split("=", 1) for pair in query.split("&")) if query else {}
        shapes.append(Shape(query or "(no filter: sort=-created_at)", params, baseline))
    return shapes
