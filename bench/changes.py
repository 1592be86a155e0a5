"""The change feed's pages at every user size (scripts/bench_sync.py): a first sync's pages and a
later sync's, over HTTP and the statement alone, with the buffers each statement reads.

Each kind of page is one request per size (`Page`), the same request at 100 / 1,000 / 10,000 /
100,000 tasks. The requests of one kind go in turn, one at each size, over a connection per size
(bench/matrix.py's `interleaved`), so its growth compares latencies taken in the same moments.
Kinds whose answer is full at every size compare equal answers; the first page at limit=200 holds
100 tasks at the 100-task user, so it comes with limit=100 too (full everywhere).
"""

from __future__ import annotations

import gc
import json
import statistics
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.matrix import GENERIC_PLANS, interleaved
from impl.tasks.changes import PAGE_SQL, _start_key
from impl.tasks.sync_token import SyncTokenCodec

PAGE_LIMIT = 200
# Changes a device finds on a later sync: so many tasks edited, one deleted.
EDITED, DELETED = 4, 1
LATER = f"later sync: {EDITED} edited, {DELETED} deleted, {DELETED} created"


@dataclass(frozen=True)
class Page:
    kind: str
    size: int  # the user's tasks
    user: str
    bearer: str
    limit: int
    since: str | None  # the sync token sent
    rows: int  # tasks and tombstones in the answer

    @property
    def path(self) -> str:
        query: dict[str, Any] = {"limit": self.limit}
        if self.since:
            query["since"] = self.since
        return f"/api/tasks/changes?{urllib.parse.urlencode(query)}"


class Api:
    """Blocking calls to the server, for setting the pages up (not timed)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, bearer: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {bearer}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def changes(self, bearer: str, since: str | None, limit: int) -> dict[str, Any]:
        query: dict[str, Any] = {"limit": limit, **({"since": since} if since else {})}
        return dict(self.call("GET", f"/api/tasks/changes?{urllib.parse.urlencode(query)}",
                              bearer))

    def caught_up(self, bearer: str, since: str | None = None) -> str:
        """Sync until caught up (pages of 1,000); the token then."""
        while True:
            body = self.changes(bearer, since, 1000)
            since = str(body["meta"]["sync_token"])
            if not body["meta"]["has_more"]:
                return since


def _rows(body: dict[str, Any]) -> int:
    return len(body["data"]["tasks"]) + len(body["data"]["deleted"])


def pages(api: Api, users: dict[int, tuple[str, str]]) -> list[Page]:
    """Every kind of page at every size (`users`: size -> (user id, bearer token)). Each user
    first syncs to a token, then edits EDITED tasks, deletes DELETED and creates as many (so
    the user keeps their size) through the API: the later sync from that token reads those."""
    out: list[Page] = []
    for size, (user, bearer) in users.items():
        def page(kind: str, limit: int, since: str | None, size: int = size, user: str = user,
                 bearer: str = bearer) -> dict[str, Any]:
            body = api.changes(bearer, since, limit)
            out.append(Page(kind, size, user, bearer, limit, since, _rows(body)))
            return body

        token = api.caught_up(bearer)
        tasks = api.changes(bearer, None, EDITED + DELETED)["data"]["tasks"]
        for task in tasks[:EDITED]:
            api.call("PATCH", f"/api/tasks/{task['id']}", bearer,
                     {"completed": not task["completed"]})
        for task in tasks[EDITED:EDITED + DELETED]:
            api.call("DELETE", f"/api/tasks/{task['id']}", bearer)
            api.call("POST", "/api/tasks", bearer, {"title": task["title"], "tags": ["work"]})
        first = page("first sync: first page", PAGE_LIMIT, None)
        page("first sync: first page, limit=100", 100, None)
        if first["meta"]["has_more"]:
            page("first sync: second page", PAGE_LIMIT, first["meta"]["sync_token"])
        short = api.changes(bearer, None, 50)
        page("first sync: second page, limit=50", 50, short["meta"]["sync_token"])
        later = page(LATER, PAGE_LIMIT, token)
        if _rows(later) != EDITED + 2 * DELETED:
            raise RuntimeError(f"later sync at {size}: {_rows(later)} changes")
        page("later sync: nothing changed", PAGE_LIMIT, api.caught_up(bearer, token))
    return out


def kinds(points: list[Page]) -> dict[str, list[int]]:
    """The indexes of each kind's points (its sizes), in the order first seen."""
    groups: dict[str, list[int]] = {}
    for index, point in enumerate(points):
        groups.setdefault(point.kind, []).append(index)
    return groups


async def measure(host: str, port: int, points: list[Page], rounds: int,
                  requests: int, say: Any) -> list[list[float]]:
    """Per point, the median latency (ms) of each round: `requests` requests per point and
    round, a kind's sizes in turn."""
    medians: list[list[float]] = [[] for _ in points]
    gc.collect()
    gc.disable()
    try:
        for round_number in range(-1, rounds):  # -1: warm-up
            started = time.monotonic()
            for group in kinds(points).values():
                times = await interleaved(host, port,
                                          [(points[i].path, points[i].bearer) for i in group],
                                          10 if round_number < 0 else requests)
                if round_number >= 0:
                    for index, samples in zip(group, times, strict=True):
                        medians[index].append(statistics.median(samples))
            if round_number >= 0:
                say(f"  change pages round {round_number + 1}/{rounds}: "
                    f"{time.monotonic() - started:.0f} s")
    finally:
        gc.enable()
    return medians


def statement_args(point: Page, codec: SyncTokenCodec) -> tuple[Any, ...]:
    """PAGE_SQL's arguments for `point`, as ChangeFeed.page sends them."""
    position = codec.decode(point.user, point.since) if point.since else None
    after_xid, after_id = _start_key(position)
    return (point.user, position.seen if position else None,
            position.target if position else None, after_xid, after_id, point.limit + 1)


async def statements(url: str, points: list[Page], codec: SyncTokenCodec,
                     samples: int = 100) -> list[dict[str, Any]]:
    """Per point: the statement alone (median ms, generic plans as the API's connections; the
    sizes of a kind in turn, as over HTTP) and what EXPLAIN (ANALYZE, BUFFERS) says it reads."""
    connection = await asyncpg.connect(url, server_settings=GENERIC_PLANS)
    args = [statement_args(point, codec) for point in points]
    times: list[list[float]] = [[] for _ in points]
    out = []
    try:
        for group in kinds(points).values():
            for sample in range(-5, samples):
                for index in group:
                    start = time.perf_counter()
                    await connection.fetch(PAGE_SQL, *args[index])
                    if sample >= 0:
                        times[index].append((time.perf_counter() - start) * 1000)
        for index in range(len(points)):
            plan = json.loads(await connection.fetchval(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {PAGE_SQL}", *args[index]))[0]["Plan"]
            out.append({"sql_ms": statistics.median(times[index]),
                        "buffers": plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]})
    finally:
        await connection.close()
    return out


def growth(points: list[Page], p50: list[float]) -> dict[str, float]:
    """Per kind: p50 at its largest size over p50 at its smallest."""
    result = {}
    for kind, group in kinds(points).items():
        by_size = {points[i].size: p50[i] for i in group}
        if len(by_size) > 1:
            result[kind] = by_size[max(by_size)] / by_size[min(by_size)]
    return result
