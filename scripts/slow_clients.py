"""Slow clients, as an attacker runs them (a "slowloris"): N connections from one source address,
each sending a request line and then one header every INTERVAL seconds, never finishing its
request. Prints one JSON object: how many opened, how many the server closed, how long each
was held (from open to the server's close), and how many were still open at the end.

    .venv/bin/python scripts/slow_clients.py 127.0.0.1:8000 --connections 21000 --interval 5

Used by tests/platform/test_slow_clients_load.py (against one `task-api serve` and the deploy
recipe) and by hand. Each connection is a bare asyncio protocol (no streams, no buffers of its
own), so one process holds tens of thousands; it raises its own descriptor limit to fit them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import sys
import time


class SlowConnection(asyncio.Protocol):
    def __init__(self, interval: float, loop: asyncio.AbstractEventLoop) -> None:
        self.interval = interval
        self.loop = loop
        self.opened = 0.0
        self.closed: float | None = None
        self.answer = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.headers_sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.opened = time.monotonic()
        transport.write(b"GET /api/health HTTP/1.1\r\nHost: slow\r\n")
        self.timer = self.loop.call_later(self.interval, self.next_header)

    def next_header(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.headers_sent += 1
        self.transport.write(b"X-Slow-%d: %d\r\n" % (self.headers_sent, self.headers_sent))
        self.timer = self.loop.call_later(self.interval, self.next_header)

    def data_received(self, data: bytes) -> None:
        if len(self.answer) < 64:
            self.answer += data[:64]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = time.monotonic()
        if self.timer is not None:
            self.timer.cancel()


def raise_descriptor_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        # Root may raise the hard limit too; others get what the hard limit allows.
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3)


async def attack(host: str, port: int, connections: int, interval: float, source: str,
                 concurrency: int, hold_seconds: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    made: list[SlowConnection] = []
    failures: dict[str, int] = {}

    async def open_one() -> None:
        async with gate:
            protocol = SlowConnection(interval, loop)
            try:
                await loop.create_connection(lambda: protocol, host, port,
                                             local_addr=(source, 0))
                made.append(protocol)
            except OSError as exc:
                name = type(exc).__name__
                failures[name] = failures.get(name, 0) + 1

    began = time.monotonic()
    print(json.dumps({"event": "opening", "connections": connections}), flush=True)
    await asyncio.gather(*(open_one() for _ in range(connections)))
    opened_in = time.monotonic() - began
    print(json.dumps({"event": "opened", "opened": len(made), "seconds": round(opened_in, 2)}),
          flush=True)
    # Until every connection is closed by the server, or hold_seconds after the start.
    while time.monotonic() - began < hold_seconds and any(c.closed is None for c in made):
        await asyncio.sleep(0.1)
    held = [c.closed - c.opened for c in made if c.closed is not None]
    still_open = [c for c in made if c.closed is None]
    for connection in still_open:
        if connection.transport is not None:
            connection.transport.abort()
    answers: dict[str, int] = {}
    for connection in made:
        if connection.closed is not None:
            status = connection.answer.split(b"\r\n", 1)[0].decode(errors="replace") or "(none)"
            answers[status] = answers.get(status, 0) + 1
    return {
        "event": "done",
        "asked": connections,
        "opened": len(made),
        "failed_to_open": failures,
        "seconds_to_open": round(opened_in, 2),
        "closed_by_server": len(held),
        "still_open": len(still_open),
        "held_seconds": {"p50": percentile(held, 0.5), "p99": percentile(held, 0.99),
                         "max": round(max(held), 3) if held else None},
        "answers": answers,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="host:port")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0,
                        help="seconds between the headers of one connection")
    parser.add_argument("--source", default="127.0.0.1", help="the address to connect from")
    parser.add_argument("--concurrency", type=int, default=512,
                        help="connections being opened at once")
    parser.add_argument("--hold-seconds", type=float, default=60.0,
                        help="give up waiting for the server to close them after this")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    raise_descriptor_limit(args.connections + 1024)
    socket.setdefaulttimeout(None)
    result = asyncio.run(attack(host, int(port), args.connections, args.interval, args.source,
                                args.concurrency, args.hold_seconds))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
