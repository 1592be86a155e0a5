"""The benchmark's matrix: every list query shape (bench/shapes.py) at every user size, first
page and the page after it, over HTTP (ours, and the baseline where it has the query) and the
list statement alone.

Latency comes from a minimal keep-alive HTTP/1.1 client on raw asyncio streams, one request at
a time (the collector off while it runs): it adds the same few tens of microseconds to every
sample whatever the size, so the growth from 100 to 100,000 tasks is the server's. (wrk's
shortest run is a second, too long for 200 points.) The requests of one shape-page's sizes
(and of its equal-answer pair) go in turn, one at each size, over a connection per size
(`interleaved`): a growth compares latencies taken in the same moments. Several rounds, and
the median taken, so a burst of load elsewhere on the machine does not land on one point.

A shape that matches only a few of the smallest user's tasks has a short page there (1 task of
100 for `tag=home&q=rec`) and a full one at 100,000: its growth then also holds the cost of
finding, reading and writing 19 more tasks, which is the answer's size, not the user's. So such
a shape-page is measured a second time with `limit` set to the smaller page's task count, at the
smallest and the largest size: the same request, the same number of tasks in the answer (and
`meta.total` still counted up to its cap), for users of 100 and 100,000 tasks. That pair's
growth is the growth at equal answers (`equal_growth`); for a shape whose pages are full at
both ends it is the limit=20 growth itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import re
import statistics
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from bench.shapes import Shape, matrix
from impl.tasks.list_sql import ListQuery, last_position, list_statement

LIMIT = 20
GENERIC_PLANS = {"plan_cache_mode": "force_generic_plan"}
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Point:
    shape: Shape
    page: str  # "first" or "next"
    size: int
    path: str  # URL path and query of the request
    user: str
    token: str
    rows: int  # the tasks on that page
    limit: int = LIMIT  # below LIMIT: a request of an equal-answer pair (see the docstring)
    cursor: str | None = None  # the next page's: from the limit=LIMIT first page


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes, path: str) -> float:
    """One request on an open connection; its latency in ms."""
    start = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = _LENGTH.search(head)
    body = await reader.readexactly(int(length.group(1)) if length else 0)
    elapsed = (time.perf_counter() - start) * 1000
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"{path}: {head[:40]!r} {body[:200]!r}")
    return elapsed


async def interleaved(host: str, port: int, targets: list[tuple[str, str]],
                      count: int) -> list[list[float]]:
    """`count` requests to each (path, token) of `targets`, one keep-alive connection each,
    taken in turn (a, b, c, a, b, c, ...): the sizes a growth compares are measured in the same
    moments, so a burst of load elsewhere on the machine slows all of them alike instead of
    the one whose batch it lands on."""
    connections = [await asyncio.open_connection(host, port) for _ in targets]
    requests = [(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
                 ).encode() for path, token in targets]
    times: list[list[float]] = [[] for _ in targets]
    try:
        for _ in range(count):
            for (reader, writer), request, (path, _token), samples in zip(
                    connections, requests, targets, times, strict=True):
                samples.append(await _exchange(reader, writer, request, path))
    finally:
        for _reader, writer in connections:
            writer.close()
    return times


def _query(shape: Shape, limit: int = LIMIT) -> ListQuery:
    params: dict[str, Any] = dict(shape.params)
    for name in ("due_before", "due_after"):
        if name in params:
            params[name] = dt.datetime.fromisoformat(params[name])
    return ListQuery(limit=limit, **params)


def page_path(shape: Shape, limit: int, cursor: str | None) -> str:
    """The request of one page of `shape` (the next one from `cursor`)."""
    query = {"limit": limit, **shape.params, **({"cursor": cursor} if cursor else {})}
    return f"/api/tasks?{urllib.parse.urlencode(query)}"


def _points(users: dict[int, tuple[str, str]], now: dt.datetime, base: str) -> list[Point]:
    """Every (shape, page, size) at limit=LIMIT, the next page's cursor from a first request;
    then the equal-answer pairs of the shape-pages whose smaller end holds fewer tasks."""
    def fetch(path: str, token: str) -> dict[str, Any]:
        request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))

    points = []
    for shape in matrix(now):
        for size, (user, token) in users.items():
            first = page_path(shape, LIMIT, None)
            body = fetch(first, token)
            points.append(Point(shape, "first", size, first, user, token, len(body["data"])))
            cursor = body["meta"]["next_cursor"]
            if cursor:
                next_path = page_path(shape, LIMIT, cursor)
                rows = len(fetch(next_path, token)["data"])
                points.append(Point(shape, "next", size, next_path, user, token, rows, cursor=cursor))
    pairs = []
    for end in equal_answer_ends(points):
        rows = len(fetch(end.path, end.token)["data"])
        if rows != end.rows:
            raise RuntimeError(f"{end.path}: {rows} tasks, expected {end.rows}")
        pairs.append(end)
    # Each shape-page's points next to each other, its pair last: measured in the same moments
    # of each round, whatever the machine's speed does meanwhile.
    order = {key: index for index, key in enumerate(dict.fromkeys(_key(p) for p in points))}
    return sorted(points + pairs, key=lambda point: order[_key(point)])


def measured_together(points: list[Point], servers: list[str]) -> list[tuple[str, list[int]]]:
    """Per server (ours, baseline) and shape-page, the indexes of its points, whose requests
    `interleaved` takes in turn: every size at limit=LIMIT and the equal-answer pair. The
    baseline serves only the first pages of its shapes at limit=LIMIT."""
    groups: dict[tuple[str, tuple[str, str]], list[int]] = {}
    for index, point in enumerate(points):
        for name in servers:
            if name == "ours" or (point.shape.baseline and point.page == "first"
                                  and point.limit == LIMIT):
                groups.setdefault((name, _key(point)), []).append(index)
    return [(name, group) for (name, _page), group in groups.items()]


def _key(point: Point) -> tuple[str, str]:
    return point.shape.name, point.page


def equal_answer_ends(points: list[Point]) -> list[Point]:
    """For each shape-page whose page at the smallest size holds fewer tasks (k, at least one)
    than at the largest: the same request with limit=k at both sizes (the next page from the
    same cursor), whose answers both hold k tasks."""
    by_page: dict[tuple[str, str], dict[int, Point]] = {}
    for point in points:
        by_page.setdefault(_key(point), {})[point.size] = point
    ends = []
    for sizes in by_page.values():
        small, large = sizes[min(sizes)], sizes[max(sizes)]
        if 0 < small.rows < large.rows:
            ends += [replace(end, path=page_path(end.shape, small.rows, end.cursor),
                             rows=small.rows, limit=small.rows) for end in (small, large)]
    return ends


async def _sql_ms(connection: asyncpg.Connection, point: Point, samples: int) -> float:
    """The list statement alone, as the store sends it (cached, so planned like the server's)."""
    query = _query(point.shape, point.limit)
    statement = list_statement(point.user, query, None)
    if point.page == "next":  # after the limit=LIMIT first page, as the cursor was made
        first = list_statement(point.user, _query(point.shape), None)
        records = await connection.fetch(first.sql, *first.args)
        statement = list_statement(point.user, query, last_position(records[LIMIT - 1]))
    for _ in range(5):
        await connection.fetch(statement.sql, *statement.args)
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        await connection.fetch(statement.sql, *statement.args)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def measure(database_url: str, ours: str, baseline: str | None,
                  users: dict[int, tuple[str, str]], now: dt.datetime, rounds: int,
                  requests: int, say: Any) -> list[dict[str, Any]]:
    points = _points(users, now, ours)
    servers = {"ours": ours, **({"baseline": baseline} if baseline else {})}
    samples: dict[tuple[int, str], list[list[float]]] = {}
    groups = measured_together(points, list(servers))
    gc.collect()
    gc.disable()
    try:
        for round_number in range(-1, rounds):  # -1: warm-up (statements prepared, caches)
            started = time.monotonic()
            for name, group in groups:
                parts = urllib.parse.urlsplit(servers[name])
                times = await interleaved(parts.hostname or "", parts.port or 0,
                                          [(points[i].path, points[i].token) for i in group],
                                          12 if round_number < 0 else requests)
                if round_number >= 0:
                    for index, samples_of_point in zip(group, times, strict=True):
                        samples.setdefault((index, name), []).append(samples_of_point)
            if round_number >= 0:
                say(f"  matrix round {round_number + 1}/{rounds}: {len(points)} points in "
                    f"{time.monotonic() - started:.0f} s")
    finally:
        gc.enable()
    # The API's connections keep generic plans (impl/platform/database.py): so does this one.
    connection = await asyncpg.connect(database_url, server_settings=GENERIC_PLANS)
    try:
        sql = [await _sql_ms(connection, point, 60) for point in points]
    finally:
        await connection.close()
    results = []
    for index, point in enumerate(points):
        row: dict[str, Any] = {"shape": point.shape.name, "page": point.page, "tasks": point.size,
                               "rows": point.rows, "limit": point.limit,
                               "sql_ms": round(sql[index], 3)}
        for name in servers:
            runs = samples.get((index, name))
            if runs:
                row[name] = {
                    "p50_ms": round(statistics.median(statistics.median(r) for r in runs), 3),
                    "p99_ms": round(statistics.median(
                        sorted(r)[int(len(r) * 0.99) - 1] for r in runs), 3),
                }
        results.append(row)
    return results


def value(row: dict[str, Any], who: str) -> float | None:
    """The p50 of `who` (ours, baseline) or the SQL alone (sql) at one point."""
    if who == "sql":
        return float(row["sql_ms"])
    return float(row[who]["p50_ms"]) if who in row else None


def paired(row: dict[str, Any]) -> bool:
    """The row is one end of an equal-answer pair (its limit is the short page's)."""
    return bool(row.get("limit", LIMIT) != LIMIT)


def growth(rows: list[dict[str, Any]], who: str = "ours", since: int = 0,
           pairs: bool = False) -> dict[tuple[str, str], float]:
    """p50 at the largest size over p50 at the smallest (at least `since`), per (shape, page):
    of the limit=LIMIT points, or (`pairs`) of the equal-answer pairs."""
    by_key: dict[tuple[str, str], dict[int, float]] = {}
    for row in rows:
        measured = value(row, who)
        if measured is not None and row["tasks"] >= since and paired(row) == pairs:
            by_key.setdefault((row["shape"], row["page"]), {})[row["tasks"]] = measured
    return {
        key: round(sizes[max(sizes)] / sizes[min(sizes)], 2)
        for key, sizes in by_key.items() if len(sizes) > 1
    }


def equal_growth(rows: list[dict[str, Any]], who: str = "ours") -> dict[tuple[str, str], float]:
    """The growth at equal answers, per (shape, page): of its equal-answer pair where it has
    one (its smaller end holds fewer tasks), else of its limit=LIMIT points."""
    return {**growth(rows, who), **growth(rows, who, pairs=True)}
