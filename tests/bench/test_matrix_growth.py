"""The benchmark matrix's growth figures (bench/matrix.py): which requests a shape-page's growth
at equal answers compares. Pure functions, no server: the figures themselves are only printed."""

from __future__ import annotations

import urllib.parse
from typing import Any

from bench.matrix import LIMIT, Point, equal_answer_ends, equal_growth, growth, page_path
from bench.shapes import Shape

SHAPE = Shape("q=receipt", {"q": "receipt"})
FULL = Shape("status=pending", {"status": "pending"})


def _point(shape: Shape, size: int, rows: int, page: str = "first",
           cursor: str | None = None) -> Point:
    return Point(shape, page, size, page_path(shape, LIMIT, cursor), f"user-{size}", "token", rows,
                 cursor=cursor)


def _row(point: Point, p50: float) -> dict[str, Any]:
    return {"shape": point.shape.name, "page": point.page, "tasks": point.size,
            "rows": point.rows, "limit": point.limit, "sql_ms": p50 / 2,
            "ours": {"p50_ms": p50, "p99_ms": 2 * p50}}


def test_a_page_short_at_the_smaller_size_is_asked_again_with_its_task_count_as_limit() -> None:
    points = [_point(SHAPE, 100, 5), _point(SHAPE, 1_000, 20), _point(SHAPE, 100_000, 20),
              _point(SHAPE, 1_000, 20, "next", "c1"), _point(SHAPE, 100_000, 3, "next", "c2"),
              _point(FULL, 100, 20), _point(FULL, 100_000, 20),
              _point(Shape("q=none", {"q": "none"}), 100, 0),
              _point(Shape("q=none", {"q": "none"}), 100_000, 0)]
    ends = equal_answer_ends(points)
    # Only the first page of q=receipt: its next page is shorter at the larger size, the full
    # shape has nothing to pair, and an empty page is the same answer at both sizes.
    assert [(end.size, end.page, end.limit, end.rows) for end in ends] == [
        (100, "first", 5, 5), (100_000, "first", 5, 5),
    ]
    assert all(urllib.parse.parse_qs(urllib.parse.urlsplit(end.path).query) == {
        "limit": ["5"], "q": ["receipt"]} for end in ends)


def test_the_next_page_of_a_pair_keeps_the_cursor_of_the_limit_20_page() -> None:
    points = [_point(SHAPE, 1_000, 1, "next", "c1"), _point(SHAPE, 100_000, 20, "next", "c2")]
    ends = equal_answer_ends(points)
    cursors = [urllib.parse.parse_qs(urllib.parse.urlsplit(end.path).query)["cursor"]
               for end in ends]
    assert cursors == [["c1"], ["c2"]] and {end.limit for end in ends} == {1}


def test_growth_at_equal_answers_takes_the_pair_where_there_is_one() -> None:
    small, large = _point(SHAPE, 100, 5), _point(SHAPE, 100_000, 20)
    pair_small, pair_large = equal_answer_ends([small, large])
    full_small, full_large = _point(FULL, 100, 20), _point(FULL, 100_000, 20)
    rows = [_row(small, 1.0), _row(large, 2.0), _row(pair_small, 1.0), _row(pair_large, 1.3),
            _row(full_small, 1.0), _row(full_large, 1.6)]
    assert growth(rows) == {("q=receipt", "first"): 2.0, ("status=pending", "first"): 1.6}
    assert growth(rows, pairs=True) == {("q=receipt", "first"): 1.3}
    # A full shape that grows is not hidden: it keeps its limit=20 growth.
    assert equal_growth(rows) == {("q=receipt", "first"): 1.3, ("status=pending", "first"): 1.6}
    assert growth(rows, "sql") == growth(rows)


def test_growth_from_a_size_ignores_the_smaller_ones() -> None:
    points = [_point(FULL, size, 20) for size in (100, 1_000, 100_000)]
    rows = [_row(point, p50) for point, p50 in zip(points, (1.0, 2.0, 2.5), strict=True)]
    assert growth(rows) == {("status=pending", "first"): 2.5}
    assert growth(rows, since=1_000) == {("status=pending", "first"): 1.25}
