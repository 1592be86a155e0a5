"""Deadlines for receiving a request, and the connection bound (impl/platform/slow_clients.py),
on a real `task-api serve` over real sockets: short deadlines (1 s) and a bound of 16 so each
case takes about a second. The loads (21,000 slow connections; 5,000 through the deploy
recipe) are in test_slow_clients_load.py.

Margins are generous (the machine is shared): a deadline is checked as "closed after at least
most of it and well before the next one would be", never to the millisecond."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.http.test_better_auth import running_api
from tests.support.factories import THROUGH_PGBOUNCER, new_user
from tests.support.servers import SECRET

pytestmark = pytest.mark.skipif(
    THROUGH_PGBOUNCER, reason="slow clients never reach the database: runs in the direct pass")

DEADLINE = 1.0  # REQUEST_HEAD_TIMEOUT_SECONDS and REQUEST_BODY_TIMEOUT_SECONDS here
BOUND = 16  # MAX_CONNECTIONS here (the least it can be)
LATE = 5.0  # a close this long past its deadline counts as none (a busy machine's margin)


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[tuple[str, int]]:
    with running_api(
        database_url, BETTER_AUTH_SECRET=SECRET, REQUEST_HEAD_TIMEOUT_SECONDS=str(DEADLINE),
        REQUEST_BODY_TIMEOUT_SECONDS=str(DEADLINE), MAX_CONNECTIONS=str(BOUND),
        SYNC_HEARTBEAT_SECONDS="0.3", SYNC_MAX_STREAMS_PER_USER="100",
        RATE_LIMIT_PER_SECOND="1000000", RATE_LIMIT_BURST="1000000", LOG_LEVEL="WARNING",
    ) as base_url:
        parts = urlsplit(base_url)
        assert parts.hostname and parts.port
        yield parts.hostname, parts.port


def connect(server: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(server, timeout=DEADLINE + LATE)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and when it closed (monotonic)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response on a kept-alive connection (its body by Content-Length)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {received!r}"
        received += chunk
    status, headers, body = parse(received)
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return status, headers, body


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def assert_timeout_envelope(response: bytes) -> None:
    status, headers, body = parse(response)
    assert status == 408, response[:200]
    assert headers["connection"] == "close"
    envelope = json.loads(body)
    assert envelope["error"]["code"] == "REQUEST_TIMEOUT"
    assert envelope["meta"]["request_id"] == headers["x-request-id"]


def request(server: tuple[str, int], path: str = "/api/health",
            token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    with connect(server) as sock:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n".encode())
        return parse(read_until_closed(sock)[0])


def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline(
    server: tuple[str, int]
) -> None:
    with connect(server) as sock:
        opened = time.monotonic()
        answer, closed = read_until_closed(sock)
    assert answer == b""  # no request began: nothing to answer
    assert DEADLINE * 0.9 <= closed - opened < DEADLINE + LATE


def test_a_head_sent_a_header_at_a_time_gets_408_at_its_deadline(
    server: tuple[str, int]
) -> None:
    """Bytes keep coming (a header every 0.2 s), but the head is never complete: the deadline
    is for the whole head, not for each read."""
    with connect(server) as sock:
        opened = time.monotonic()
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: t\r\n")
        sock.settimeout(0.2)
        chunks: list[bytes] = []
        for n in range(int((DEADLINE + LATE) / 0.2)):
            try:
                sock.sendall(b"X-Slow-%d: 1\r\n" % n)
            except OSError:  # closed by the server while we wrote
                break
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            chunks.append(chunk)
        closed = time.monotonic()
    assert_timeout_envelope(b"".join(chunks))
    assert DEADLINE * 0.9 <= closed - opened < DEADLINE + LATE


async def test_a_body_that_does_not_arrive_in_time_gets_408_and_writes_nothing(
    server: tuple[str, int], db: asyncpg.Connection
) -> None:
    user = new_user()
    with connect(server) as sock:
        sock.sendall(
            f"POST /api/tasks HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {user.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            '{"title": "never finished'.encode())
        sent = time.monotonic()
        answer, closed = read_until_closed(sock)
    assert_timeout_envelope(answer)
    assert DEADLINE * 0.9 <= closed - sent < DEADLINE + LATE
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1", user.id) == 0


def test_on_a_kept_alive_connection_each_request_has_its_own_deadline(
    server: tuple[str, int]
) -> None:
    """Two quick requests on one connection, each answered; then a head that never ends
    after them: 408 at the deadline counted from the last response."""
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock)[0] == 200
            time.sleep(DEADLINE * 0.6)  # together more than one deadline: it restarts
        answered = time.monotonic()
        sock.sendall(b"GET /api/health HTTP/1.1\r\n")
        response, closed = read_until_closed(sock)
    assert_timeout_envelope(response)
    assert closed - answered < DEADLINE + LATE


def test_the_live_stream_outlives_every_deadline(server: tuple[str, int]) -> None:
    """The deadlines are for receiving a request: a response (here the event stream, idle,
    its heartbeats every 0.3 s) lasts well past both."""
    user = new_user()
    with connect(server) as sock:
        sock.sendall(f"GET /api/tasks/events HTTP/1.1\r\nHost: t\r\n"
                     f"Authorization: Bearer {user.token}\r\n\r\n".encode())
        sock.settimeout(DEADLINE + LATE)
        received = b""
        began = time.monotonic()
        while time.monotonic() - began < 3 * DEADLINE:
            chunk = sock.recv(65536)
            assert chunk, "the stream was closed"
            received += chunk
        tail = received[-2000:]
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b": heartbeat" in tail  # still flowing at the end


def test_over_the_bound_the_connection_waiting_longest_gives_way(
    server: tuple[str, int]
) -> None:
    """Twice the bound of connections that sent nothing: each one over the bound closes the
    oldest of them, so the newest are open and a normal request is served at once."""
    idle = [connect(server) for _ in range(2 * BOUND)]
    try:
        status, _, _ = request(server)
        assert status == 200
        time.sleep(0.2)
        closed = []
        for sock in idle:
            sock.setblocking(False)
            try:
                closed.append(sock.recv(1) == b"")
            except BlockingIOError:
                closed.append(False)
        # The oldest gave way (at least those over the bound), the newest are still open.
        assert all(closed[:BOUND]), closed
        assert not any(closed[-BOUND // 2:]), closed
    finally:
        for sock in idle:
            sock.close()


def test_with_every_connection_serving_a_new_one_gets_503(server: tuple[str, int]) -> None:
    """Connections serving a request never give way (here: live streams, one per user): at the
    bound, a newcomer is answered 503 with Retry-After, and served again once one ends."""
    streams = []
    try:
        for _ in range(BOUND):
            sock = connect(server)
            sock.sendall(f"GET /api/tasks/events HTTP/1.1\r\nHost: t\r\n"
                         f"Authorization: Bearer {new_user().token}\r\n\r\n".encode())
            assert sock.recv(64).startswith(b"HTTP/1.1 200 ")
            streams.append(sock)
        status, headers, body = request(server)
        assert status == 503
        assert headers["retry-after"] == "1"
        assert json.loads(body)["error"]["code"] == "SERVICE_UNAVAILABLE"
    finally:
        for sock in streams:
            sock.close()
    deadline = time.monotonic() + LATE
    while request(server)[0] != 200:
        assert time.monotonic() < deadline, "still refused after the streams closed"
        time.sleep(0.1)
