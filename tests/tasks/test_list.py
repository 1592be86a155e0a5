"""Listing: filters, search, sort orders, keyset pagination and cursors."""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.factories import User

CONTRACT = Path(__file__).resolve().parents[2] / "openapi.yaml"


async def create(client: httpx.AsyncClient, user: User, **fields: object) -> dict:
    response = await client.post("/api/tasks", json={"title": "T", **fields}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def all_pages(
    client: httpx.AsyncClient, user: User, **params: object
) -> tuple[list[dict], list[int]]:
    """Every task, following next_cursor; also returns each page's meta.total."""
    tasks: list[dict] = []
    totals = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/api/tasks", params=query, headers=user.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        tasks += body["data"]
        totals.append(body["meta"]["total"])
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            return tasks, totals


@pytest.fixture
async def varied(client: httpx.AsyncClient, alice: User) -> list[dict]:
    specs = [
        {"title": "Buy milk", "priority": "high", "tags": ["home"], "due_date": "2026-12-03T00:00:00Z"},
        {"title": "alpha report", "priority": "low", "tags": ["work"], "description": "Quarterly MILK stats"},
        {"title": "Call mum", "priority": "medium", "completed": True, "due_date": "2026-12-01T00:00:00Z"},
        {"title": "Zebra 100% done_ok", "priority": "high", "tags": ["home", "work"]},
        {"title": "Backslash \\ task", "priority": "low", "due_date": "2026-12-02T00:00:00Z"},
        {"title": "beta", "priority": "medium", "completed": True},
    ]
    return [await create(client, alice, **spec) for spec in specs]


def titles(tasks: list[dict]) -> list[str]:
    return [task["title"] for task in tasks]


async def test_default_sort_is_newest_first(
    client: httpx.AsyncClient, alice: User, varied: list[dict]
) -> None:
    tasks, _ = await all_pages(client, alice)
    assert titles(tasks) == titles(varied)[::-1]


async def test_filters(client: httpx.AsyncClient, alice: User, varied: list[dict]) -> None:
    async def listed(**params: object) -> set[str]:
        tasks, totals = await all_pages(client, alice, **params)
        assert totals[0] == len(tasks)
        return set(titles(tasks))

    assert await listed(status="pending") == {"Buy milk", "alpha report", "Zebra 100% done_ok", "Backslash \\ task"}
    assert await listed(status="completed") == {"Call mum", "beta"}
    assert await listed(priority="high") == {"Buy milk", "Zebra 100% done_ok"}
    assert await listed(tag="work") == {"alpha report", "Zebra 100% done_ok"}
    assert await listed(q="milk") == {"Buy milk", "alpha report"}  # title or description, any case
    assert await listed(q="MIL") == {"Buy milk", "alpha report"}  # the beginning of a word
    assert await listed(q="ilk") == set()  # not the beginning of a word
    assert await listed(q="100%") == {"Zebra 100% done_ok"}  # words: runs of letters and digits
    assert await listed(q="ok") == {"Zebra 100% done_ok"}  # `_` separates words
    assert await listed(q="done ze") == {"Zebra 100% done_ok"}  # every word, in any order
    assert await listed(q="done zebras") == set()
    for no_word in ("%", "_", "\\", "'", "--", "  "):  # no letter or digit: matches no task
        assert await listed(q=no_word) == set(), no_word
    assert await listed(q="'; DROP TABLE tasks; --") == set()
    assert await listed(due_before="2026-12-02T12:00:00Z") == {"Call mum", "Backslash \\ task"}
    assert await listed(due_after="2026-12-01T12:00:00+00:00") == {"Buy milk", "Backslash \\ task"}
    assert await listed(status="pending", priority="high", tag="home", q="milk") == {"Buy milk"}


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("title", ["Backslash \\ task", "Buy milk", "Call mum", "Zebra 100% done_ok", "alpha report", "beta"]),
        ("priority", None),
        ("-priority", None),
        ("due_date", ["Call mum", "Backslash \\ task", "Buy milk"]),
        ("-due_date", ["Buy milk", "Backslash \\ task", "Call mum"]),
        ("created_at", None),
        ("updated_at", None),
        ("-updated_at", None),
    ],
)
async def test_sort_orders_page_by_page(
    client: httpx.AsyncClient, alice: User, varied: list[dict], sort: str, expected: list[str] | None
) -> None:
    one_by_one, _ = await all_pages(client, alice, sort=sort, limit=1)
    at_once, _ = await all_pages(client, alice, sort=sort, limit=100)
    assert [t["id"] for t in one_by_one] == [t["id"] for t in at_once]
    assert len(at_once) == len(varied)
    if sort.lstrip("-") == "priority":
        rank = {"low": 0, "medium": 1, "high": 2}
        ranks = [rank[t["priority"]] for t in at_once]
        assert ranks == sorted(ranks, reverse=sort.startswith("-"))
    elif sort.lstrip("-") == "due_date":
        # Dated tasks in order, undated ones last in both directions.
        assert titles(at_once)[:3] == expected
        assert all(t["due_date"] is None for t in at_once[3:])
    elif expected is not None:
        assert sorted(titles(at_once)) == sorted(expected)
        assert titles(at_once) == sorted(titles(at_once)) or titles(at_once) == expected
    else:
        key = sort.lstrip("-")
        values = [t[key] for t in at_once]
        assert values == sorted(values, reverse=sort.startswith("-"))


async def test_ties_break_on_id_in_the_sort_direction(
    client: httpx.AsyncClient, alice: User
) -> None:
    for _ in range(6):
        await create(client, alice, title="same", priority="low")
    tasks, _ = await all_pages(client, alice, sort="title", limit=2)
    ids = [t["id"] for t in tasks]
    assert ids == sorted(ids)
    backwards, _ = await all_pages(client, alice, sort="-title", limit=2)
    assert [t["id"] for t in backwards] == ids[::-1]


async def test_pagination_neither_skips_nor_repeats_under_concurrent_inserts(
    client: httpx.AsyncClient, alice: User
) -> None:
    originals = [await create(client, alice, title=f"original {i}") for i in range(25)]
    seen: list[str] = []
    cursor = None
    inserted = []
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page, new = await asyncio.gather(
            client.get("/api/tasks", params=params, headers=alice.headers),
            create(client, alice, title="inserted meanwhile"),
        )
        inserted.append(new["id"])
        body = page.json()
        seen += [t["id"] for t in body["data"]]
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a task was repeated"
    assert {t["id"] for t in originals} <= set(seen), "a task that existed throughout was skipped"


async def test_limit_bounds_and_meta(client: httpx.AsyncClient, alice: User) -> None:
    for _ in range(3):
        await create(client, alice)
    body = (await client.get("/api/tasks", params={"limit": 2}, headers=alice.headers)).json()
    assert len(body["data"]) == 2 and body["meta"]["limit"] == 2 and body["meta"]["total"] == 3
    assert body["meta"]["total_exact"] is True
    assert body["meta"]["next_cursor"]
    for limit in (0, 101, -1, "ten"):
        response = await client.get("/api/tasks", params={"limit": limit}, headers=alice.headers)
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "query.limit"


async def test_bad_filter_values_are_422(client: httpx.AsyncClient, alice: User) -> None:
    for params in (
        {"status": "done"}, {"priority": "urgent"}, {"sort": "colour"}, {"sort": "--title"},
        {"due_before": "yesterday"}, {"due_after": "2026-12-01"}, {"q": ""}, {"tag": "x" * 33},
    ):
        response = await client.get("/api/tasks", params=params, headers=alice.headers)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_tampered_and_foreign_cursors_are_422(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    for _ in range(3):
        await create(client, alice)
        await create(client, bob)
    body = (await client.get("/api/tasks", params={"limit": 1}, headers=alice.headers)).json()
    cursor = body["meta"]["next_cursor"]
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[3] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    cases = [
        ({"cursor": tampered}, alice),
        ({"cursor": "AAAA"}, alice),
        ({"cursor": "x"}, alice),
        ({"cursor": cursor}, bob),  # another user's cursor
        ({"cursor": "not base64!"}, alice),
    ]
    for params, user in cases:
        response = await client.get("/api/tasks", params={"limit": 1, **params}, headers=user.headers)
        assert response.status_code == 422, params
        assert response.json()["error"]["details"][0]["field"] == "query.cursor"
    ok = await client.get("/api/tasks", params={"limit": 1, "cursor": cursor}, headers=alice.headers)
    assert ok.status_code == 200 and ok.json()["data"][0]["id"] != body["data"][0]["id"]


async def test_a_cursor_reveals_nothing_of_the_task_it_marks(
    client: httpx.AsyncClient, alice: User
) -> None:
    """A cursor once was readable base64 of the last task's title and dates, which then sat in
    access logs, proxies and browser history. Now it is sealed: no title, date or id inside,
    and a fresh seal each time (the same page gives two different cursors)."""
    marked = await create(client, alice, title="Quarterly salary review",
                          due_date="2031-04-05T06:07:08Z")
    await create(client, alice, title="Zeta")
    params = {"limit": 1, "sort": "title"}
    pages = [(await client.get("/api/tasks", params=params, headers=alice.headers)).json()
             for _ in range(2)]
    assert [page["data"][0]["id"] for page in pages] == [marked["id"]] * 2
    cursors = [page["meta"]["next_cursor"] for page in pages]
    assert cursors[0] != cursors[1]
    for cursor in cursors:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        for secret in ("Quarterly", "salary", "2031", marked["id"], marked["created_at"][:10]):
            assert secret.encode() not in raw and secret not in cursor
        following = await client.get("/api/tasks", params={**params, "cursor": cursor},
                                     headers=alice.headers)
        assert [t["title"] for t in following.json()["data"]] == ["Zeta"]


async def test_the_longest_cursor_keeps_the_contracts_bounds(
    client: httpx.AsyncClient, alice: User
) -> None:
    """The longest position: a title of 255 control characters, each \\uXXXX in the sealed
    JSON. Its cursor still matches the contract's pattern and maxLength, and works."""
    contract = yaml.safe_load(CONTRACT.read_text())
    schema = contract["components"]["parameters"]["CursorParam"]["schema"]
    await create(client, alice, title="z")  # the oldest: the last page
    for title in ("\x01" * 254 + "x", "\U0001d11e" * 255):
        await create(client, alice, title=title, due_date="2031-04-05T06:07:08.123456Z")
    cursor = None
    for _ in range(2):  # newest first: the two long titles' positions
        query = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/tasks", params=query, headers=alice.headers)).json()
        cursor = page["meta"]["next_cursor"]
        assert re.fullmatch(schema["pattern"], cursor) and len(cursor) <= schema["maxLength"]
        assert len(cursor) < 2600, len(cursor)  # about 1,700 bytes sealed, in base64
    last = await client.get("/api/tasks", params={"limit": 1, "cursor": cursor},
                            headers=alice.headers)
    assert [t["title"] for t in last.json()["data"]] == ["z"]


async def test_a_cursor_continues_in_the_order_of_the_request(
    client: httpx.AsyncClient, alice: User, varied: list[dict]
) -> None:
    """A cursor marks a task: with another sort or filters, the next page starts after that
    task in the new order."""
    first = (await client.get("/api/tasks", params={"limit": 2}, headers=alice.headers)).json()
    cursor, marker = first["meta"]["next_cursor"], first["data"][-1]
    by_title, _ = await all_pages(client, alice, sort="title", limit=100)
    expected = [t["id"] for t in by_title[[t["id"] for t in by_title].index(marker["id"]) + 1 :]]
    response = await client.get(
        "/api/tasks", params={"sort": "title", "limit": 100, "cursor": cursor}, headers=alice.headers
    )
    assert response.status_code == 200
    assert [t["id"] for t in response.json()["data"]] == expected
    pending = await client.get(
        "/api/tasks", params={"status": "completed", "cursor": cursor}, headers=alice.headers
    )
    assert pending.status_code == 200
    assert all(t["completed"] for t in pending.json()["data"])


async def test_q_examples_of_the_contract(client: httpx.AsyncClient, alice: User) -> None:
    """The examples in openapi.yaml's description of `q`, as written there."""
    task = await create(client, alice, title="Email the quarterly report", description="Keep the receipt")
    await create(client, alice, title="Something else")
    for q in ("report", "REP", "rec email", "quarter-rep"):
        tasks, totals = await all_pages(client, alice, q=q)
        assert [t["id"] for t in tasks] == [task["id"]] and totals == [1], q
    for q in ("port", "reports", "mail", "email invoice", "%"):
        tasks, totals = await all_pages(client, alice, q=q)
        assert tasks == [] and totals == [0], q


async def test_total_is_capped_at_20_for_searches_and_due_dates(
    client: httpx.AsyncClient, alice: User
) -> None:
    for i in range(21):
        await create(client, alice, title=f"report {i}", due_date="2026-12-01T00:00:00Z")
    for params in ({"q": "report"}, {"due_before": "2027-01-01T00:00:00Z"}):
        body = (await client.get("/api/tasks", params={**params, "limit": 10}, headers=alice.headers)).json()
        assert (body["meta"]["total"], body["meta"]["total_exact"]) == (20, False), params
        tasks, _ = await all_pages(client, alice, **params)
        assert len(tasks) == 21  # the pages hold every match
    await client.delete(f"/api/tasks/{tasks[0]['id']}", headers=alice.headers)
    body = (await client.get("/api/tasks", params={"q": "report"}, headers=alice.headers)).json()
    assert (body["meta"]["total"], body["meta"]["total_exact"]) == (20, True)
    counted = (await client.get("/api/tasks", params={"status": "pending"}, headers=alice.headers)).json()
    assert (counted["meta"]["total"], counted["meta"]["total_exact"]) == (20, True)
