"""Every listing shape against a reference model written in Python: filters alone and
combined, each sort in both directions, page by page through the cursor, and meta.total.

The listing reads a page in one of two ways depending on how many tasks match (collect them
all and sort, or walk the sort index), and counts with the counters or up to 20 (impl/
task_list_sql.py): the data here has filters on both sides of each threshold, so every branch
must give the reference answer.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.factories import User, new_user

TOTAL_CAP = 20
START = datetime.fromisoformat("2026-12-01T09:00:00+00:00")
VERBS = ["Email", "Review", "Fix", "Plan", "Book", "Pay", "Call", "Draft"]
OBJECTS = ["the report", "report draft", "slides", "the zebra", "reports", "flights"]
TAGS = [[], ["work"], ["home"], ["work", "urgent"], ["urgent"], ["home", "work"]]
PRIORITIES = ["low", "medium", "high"]


def _body(i: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": f"{VERBS[i % len(VERBS)]} {OBJECTS[(i * 5) % len(OBJECTS)]} {i}",
        "priority": PRIORITIES[(i // 2) % 3],
        "tags": TAGS[(i // 3) % len(TAGS)],
        "completed": i % 4 == 0,
    }
    if i % 3 == 1:
        body["description"] = "Keep the receipt for the expense report"
    if i % 6 != 5:  # a sixth have no due date
        body["due_date"] = (START + timedelta(hours=(i * 37) % 400)).isoformat()
    return body


@pytest.fixture(scope="module")
def tasks(base_url: str) -> tuple[User, list[dict[str, Any]]]:
    """80 tasks of one user, 6 of them edited afterwards (updated_at differs from created_at)."""
    user = new_user()
    with httpx.Client(base_url=base_url, headers=user.headers, timeout=30) as http:
        created = []
        for i in range(80):
            response = http.post("/api/tasks", json=_body(i))
            assert response.status_code == 201, response.text
            created.append(response.json()["data"])
        for task in created[5:65:10]:
            response = http.patch(f"/api/tasks/{task['id']}", json={"title": task["title"] + "!"})
            assert response.status_code == 200
        # New words and tags after the fact: task_tags (migration 0005) must follow them.
        for task in created[7:77:10]:
            change = {"description": "Zebra crossing report", "tags": ["home", "urgent"]}
            response = http.patch(f"/api/tasks/{task['id']}", json=change)
            assert response.status_code == 200
        listed = http.get("/api/tasks", params={"limit": 100}).json()["data"]
    assert len(listed) == 80
    return user, listed


# --- the reference ------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return [word for word in re.split(r"[^a-z0-9]+", text.lower()) if word]


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _matches(task: dict[str, Any], filters: dict[str, str]) -> bool:
    status = filters.get("status", "all")
    if status != "all" and task["completed"] != (status == "completed"):
        return False
    if "priority" in filters and task["priority"] != filters["priority"]:
        return False
    if "tag" in filters and filters["tag"] not in task["tags"]:
        return False
    if "q" in filters:
        words = _words(f"{task['title']} {task['description'] or ''}")
        wanted = _words(filters["q"])
        if not wanted or not all(any(w.startswith(q) for w in words) for q in wanted):
            return False
    due = task["due_date"] and _instant(task["due_date"])
    if "due_before" in filters and not (due and due < _instant(filters["due_before"])):
        return False
    return not ("due_after" in filters and not (due and due > _instant(filters["due_after"])))


def _ordered(tasks: list[dict[str, Any]], sort: str) -> list[str]:
    """Ids in the contract's order: the key, ties on id, a descending sort the reverse of the
    ascending one, but tasks without a due date last in both directions."""
    name, descending = sort.lstrip("-"), sort.startswith("-")
    rank = {"low": 0, "medium": 1, "high": 2}

    def key(task: dict[str, Any]) -> Any:
        value = task[name]
        if name in ("created_at", "updated_at", "due_date"):
            value = _instant(value)
        elif name == "priority":
            value = rank[value]
        return (value, task["id"])

    dated = [t for t in tasks if name != "due_date" or t["due_date"] is not None]
    undated = [t for t in tasks if name == "due_date" and t["due_date"] is None]
    dated.sort(key=key, reverse=descending)
    undated.sort(key=lambda t: t["id"], reverse=descending)
    return [t["id"] for t in dated + undated]


# --- the shapes ---------------------------------------------------------------------------------

SORTS = ["created_at", "-created_at", "updated_at", "-updated_at", "due_date", "-due_date",
         "priority", "-priority", "title", "-title"]
BEFORE = (START + timedelta(hours=350)).isoformat()
AFTER = (START + timedelta(hours=60)).isoformat()
FILTERS: list[dict[str, str]] = [
    {},
    {"status": "pending"},
    {"status": "completed"},
    {"priority": "high"},
    {"tag": "work"},
    {"tag": "urgent"},
    {"tag": "nobody"},
    {"q": "report"},  # more than 20 matches: counted up to 20
    {"q": "REP"},
    {"q": "zeb"},
    {"q": "receipt expense"},
    {"q": "%"},
    {"q": "nothing"},
    {"due_before": BEFORE},  # more than 20
    {"due_after": AFTER},
    {"due_after": AFTER, "due_before": BEFORE},
    {"status": "pending", "priority": "high"},
    {"status": "completed", "tag": "work"},
    {"priority": "low", "q": "report"},
    {"tag": "home", "due_before": BEFORE},
    {"q": "report", "due_after": AFTER},
    {"status": "pending", "q": "rep", "tag": "work"},
    # A tag sorted by created_at walks task_tags, testing word bits before the words.
    {"tag": "work", "q": "report"},
    {"tag": "home", "q": "re"},  # too short for word bits: every row is tested
    {"tag": "urgent", "q": "zebra cross"},
    {"tag": "home", "q": "receipt expense"},
    {"tag": "work", "status": "completed", "priority": "low"},
]


def _shape(filters: dict[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in filters.items()) or "no filter"


async def _pages(
    client: httpx.AsyncClient, user: User, params: dict[str, Any]
) -> tuple[list[str], set[tuple[int, bool]]]:
    ids: list[str] = []
    totals = set()
    cursor = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/api/tasks", params=query, headers=user.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        ids += [task["id"] for task in body["data"]]
        totals.add((body["meta"]["total"], body["meta"]["total_exact"]))
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            return ids, totals
    raise AssertionError("more than 100 pages")


@pytest.mark.parametrize("filters", FILTERS, ids=_shape)
async def test_every_sort_and_page_size_matches_the_reference(
    client: httpx.AsyncClient, tasks: tuple[User, list[dict[str, Any]]], filters: dict[str, str]
) -> None:
    user, everything = tasks
    matching = [task for task in everything if _matches(task, filters)]
    counted = not {"q", "due_before", "due_after"} & filters.keys()
    if counted or len(matching) <= TOTAL_CAP:
        expected_total = (len(matching), True)
    else:
        expected_total = (TOTAL_CAP, False)
    for sort in SORTS:
        for limit in (50,) if sort not in ("-created_at", "title", "-due_date") else (4, 50):
            ids, totals = await _pages(client, user, {**filters, "sort": sort, "limit": limit})
            assert ids == _ordered(matching, sort), (sort, limit)
            assert totals == {expected_total}, (sort, limit)


def test_the_data_crosses_every_threshold(tasks: tuple[User, list[dict[str, Any]]]) -> None:
    """Guard for the test above: some shapes have more than 20 matches, some very few."""
    _, everything = tasks
    sizes = {_shape(f): sum(_matches(t, f) for t in everything) for f in FILTERS}
    assert sizes["q=report"] > TOTAL_CAP and sizes[f"due_before={BEFORE}"] > TOTAL_CAP
    assert 0 < sizes["q=zeb"] < 20 and sizes["tag=nobody"] == 0 and sizes["q=%"] == 0
