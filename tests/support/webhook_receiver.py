"""A real HTTP endpoint for webhook tests: uvicorn on a loopback port, in a thread, recording
every request it gets and answering as the test says (status, delay, body) per request."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tests.support.thread_server import serving


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    arrived: float  # time.time()

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


# (the request, how many requests with its webhook-id came before it) -> (status, delay, body)
Answer = Callable[[Received, int], tuple[int, float, bytes]]


def always_ok(_received: Received, _earlier: int) -> tuple[int, float, bytes]:
    return 200, 0.0, b"ok"


@dataclass
class Receiver:
    url: str
    answer: Answer = always_ok
    headers: dict[str, str] = field(default_factory=dict)  # on every answer (a Location...)
    received: list[Received] = field(default_factory=list)
    # The most requests of one webhook-id in progress at once, and of all together.
    most_at_once_per_id: int = 0
    most_at_once: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _in_progress: Counter[str] = field(default_factory=Counter)

    def ids(self) -> list[str]:
        with self._lock:
            return [r.webhook_id for r in self.received]

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        received = Received(dict(request.headers), await request.body(), time.time())
        with self._lock:
            earlier = sum(1 for r in self.received if r.webhook_id == received.webhook_id)
            self.received.append(received)
            self._in_progress[received.webhook_id] += 1
            self.most_at_once_per_id = max(self.most_at_once_per_id,
                                           self._in_progress[received.webhook_id])
            self.most_at_once = max(self.most_at_once, sum(self._in_progress.values()))
        try:
            status, delay, body = self.answer(received, earlier)
            if delay:
                await asyncio.sleep(delay)
        finally:
            with self._lock:
                self._in_progress[received.webhook_id] -= 1
        await Response(body, status, self.headers)(scope, receive, send)


@contextmanager
def running_receiver(answer: Answer = always_ok) -> Iterator[Receiver]:
    receiver = Receiver("", answer)
    with serving(receiver, stop_seconds=10, timeout_graceful_shutdown=1) as port:
        receiver.url = f"http://127.0.0.1:{port}/hook"
        yield receiver


async def eventually(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Polls `condition` until it holds; fails after `timeout` seconds (generous: the machine
    is shared)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.05)


async def eventually_async(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """`eventually` for a check that awaits (an API call)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.1)
