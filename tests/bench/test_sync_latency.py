"""The live-stream benchmark's arithmetic (bench/streams.py): how the SSE bytes are split into
events and which arrival a write's latency is taken from. Pure functions, no server: the
figures themselves are only printed (scripts/bench_sync.py)."""

from __future__ import annotations

import json

from bench.changes import Page, growth, kinds
from bench.streams import arrivals_of, latencies, parse_events


def test_events_are_split_at_blank_lines_and_comments_and_retry_hints_are_skipped() -> None:
    data = json.dumps({"tasks": [{"id": "a", "version": 2}], "deleted": []}).encode()
    wire = (b"retry: 3000\n\n: heartbeat\n\nevent: changes\nid: tok1\ndata: " + data
            + b"\n\nevent: up-to-date\nid: tok1\ndata: {\"sync_token\":\"tok1\"}\n\nevent: cha")
    events, rest = parse_events(wire)
    assert [name for name, _ in events] == ["changes", "up-to-date"]
    assert events[0][1] == data
    assert rest == b"event: cha"  # an incomplete message waits for the next chunk


def test_a_changes_event_stamps_its_tasks_with_their_version_and_tombstones_with_minus_one() -> None:
    data = json.dumps({"tasks": [{"id": "a", "version": 3}],
                       "deleted": [{"id": "b", "deleted_at": "2026-12-07T00:00:00Z"}]}).encode()
    assert arrivals_of(data, 5.0) == [("a", 3, 5.0), ("b", -1, 5.0)]


def test_each_write_is_timed_on_every_stream_of_its_user_from_the_first_event_that_has_it() -> None:
    writes = [("u1", "t1", 2, 10.0), ("u1", "t1", 3, 10.1), ("u2", "t2", 5, 11.0)]
    users = ["u1", "u1", "u2"]
    arrivals = [
        # Both writes of t1 came in one event (version 3): the first is timed from it too.
        [("t1", 3, 10.15)],
        [("t1", 2, 10.05), ("t1", 3, 10.2)],
        [("t0", 1, 10.5)],  # another task: the write of t2 never came on this stream
    ]
    found, missing = latencies(writes, users, arrivals)
    assert sorted(round(value, 3) for value in found) == [0.05, 0.05, 0.1, 0.15]
    assert missing == 1


def test_a_kinds_growth_compares_its_largest_size_with_its_smallest() -> None:
    def page(kind: str, size: int) -> Page:
        return Page(kind, size, f"user-{size}", "bearer", 200, None, 200)

    points = [page("first", 100), page("first", 100_000), page("later", 1_000),
              page("later", 100_000), page("only", 100)]
    assert kinds(points) == {"first": [0, 1], "later": [2, 3], "only": [4]}
    assert growth(points, [1.0, 1.2, 2.0, 1.0, 9.0]) == {"first": 1.2, "later": 0.5}
