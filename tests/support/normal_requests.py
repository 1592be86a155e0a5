"""Normal requests while something else happens (tests/platform/test_slow_clients_load.py): one
GET at a time, each on a new connection (as a new visitor comes), its time from connect() to
the whole response; failures kept with what went wrong."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

TIMEOUT_SECONDS = 10.0  # a request slower than this counts as failed
PAUSE_SECONDS = 0.05


class NormalRequests:
    def __init__(self, host: str, port: int, path: str, token: str) -> None:
        self.address = (host, port)
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}"
                        "\r\nConnection: close\r\n\r\n").encode()
        self.seconds: list[float] = []
        self.failures: list[str] = []

    def one(self) -> None:
        began = time.monotonic()
        try:
            with socket.create_connection(self.address, timeout=TIMEOUT_SECONDS) as sock:
                sock.sendall(self.request)
                received = b""
                while chunk := sock.recv(65536):
                    received += chunk
        except OSError as exc:
            self.failures.append(repr(exc))
            return
        if received.startswith(b"HTTP/1.1 200 "):
            self.seconds.append(time.monotonic() - began)
        else:
            self.failures.append(received[:80].decode(errors="replace"))

    def run(self, count: int) -> None:
        for _ in range(count):
            self.one()
            time.sleep(PAUSE_SECONDS)

    def within(self, seconds: float) -> int:
        return sum(1 for s in self.seconds if s <= seconds)

    def run_until(self, process: subprocess.Popen[str]) -> None:
        """Until `process` exits."""
        while process.poll() is None:
            self.one()
            time.sleep(PAUSE_SECONDS)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.seconds)

        def at(fraction: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3) \
                if ordered else None

        return {
            "sent": len(ordered) + len(self.failures),
            "answered_within_1s": sum(1 for s in ordered if s <= 1.0),
            "p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], 3) if ordered else None,
            "failures": len(self.failures), "first_failures": self.failures[:5],
        }
