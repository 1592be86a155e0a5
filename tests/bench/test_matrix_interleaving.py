"""The benchmark matrix takes the requests a growth compares in turn (bench/matrix.py
`measured_together`, `interleaved`): against a real HTTP server on a socket, which records the
order the requests reach it."""

from __future__ import annotations

import asyncio

import pytest

from bench.matrix import LIMIT, Point, equal_answer_ends, interleaved, measured_together, page_path
from bench.shapes import Shape

SEARCH = Shape("q=receipt", {"q": "receipt"})
STATUS = Shape("status=pending", {"status": "pending"}, baseline=True)


def _point(shape: Shape, size: int, rows: int, page: str = "first") -> Point:
    cursor = "c" if page == "next" else None
    return Point(shape, page, size, page_path(shape, LIMIT, cursor), f"user-{size}",
                 f"token-{size}", rows, cursor=cursor)


def test_a_shape_pages_sizes_and_its_pair_are_one_group_and_the_baseline_only_has_its_first_pages(
) -> None:
    search = [_point(SEARCH, 100, 5), _point(SEARCH, 100_000, 20)]
    status = [_point(STATUS, 100, 20), _point(STATUS, 100_000, 20),
              _point(STATUS, 100, 20, "next"), _point(STATUS, 100_000, 20, "next")]
    points = [*search, *equal_answer_ends(search), *status]
    groups = measured_together(points, ["ours", "baseline"])
    assert groups == [
        ("ours", [0, 1, 2, 3]),  # q=receipt at limit=20 and its limit=5 pair
        ("ours", [4, 5]), ("baseline", [4, 5]),  # status=pending, first page
        ("ours", [6, 7]),  # its next page: the baseline has no cursor
    ]


async def _recording_server(order: list[str], failing: str | None = None
                            ) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                path = head.split(b" ", 2)[1].decode()
                order.append(path)
                status = b"500 Internal Server Error" if path == failing else b"200 OK"
                body = b'{"data": []}'
                writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except asyncio.IncompleteReadError:  # the client closed its connection
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_requests_to_the_sizes_go_in_turn_one_at_a_time() -> None:
    order: list[str] = []
    server = await _recording_server(order)
    port = server.sockets[0].getsockname()[1]
    async with server:
        times = await interleaved("127.0.0.1", port, [("/a", "t"), ("/b", "t"), ("/c", "t")], 4)
    assert order == ["/a", "/b", "/c"] * 4
    assert [len(samples) for samples in times] == [4, 4, 4]
    assert all(latency > 0 for samples in times for latency in samples)


async def test_a_request_that_does_not_answer_200_stops_the_measurement() -> None:
    server = await _recording_server([], failing="/b")
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(RuntimeError, match="/b: b'HTTP/1.1 500"):
            await interleaved("127.0.0.1", port, [("/a", "t"), ("/b", "t")], 2)
