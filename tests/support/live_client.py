"""A live-stream client for the tests, as a frontend would write one over `fetch`: it reads
`GET /api/tasks/events` (Server-Sent Events, bearer header), applies every `changes` event to
its own copy of the user's tasks, and when the stream ends (the server closing with a `retry:`
hint, a cut connection, an error status) reconnects after the hinted delay with
`Last-Event-ID`, the id of the last event it applied. Every message is kept with the time it
arrived (time.monotonic()), so a test can measure from a write's response to its event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

EVENTS_PATH = "/api/tasks/events"
FIRST_RETRY_MILLISECONDS = 3000  # the standard's suggestion until the server sends its own


@dataclass
class Message:
    """One dispatched event (`event`, `id`, `data`) or a bare `retry:` block."""

    event: str | None
    id: str | None
    data: str
    retry: int | None
    arrived: float

    def json(self) -> Any:
        return json.loads(self.data)


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """The stream's messages as the HTML standard parses them: fields until a blank line;
    comment lines (`: heartbeat`) are skipped."""
    event: str | None = None
    event_id: str | None = None
    data: list[str] = []
    retry: int | None = None
    async for line in response.aiter_lines():
        if line == "":
            if event is not None or event_id is not None or data or retry is not None:
                yield Message(event, event_id, "\n".join(data), retry, time.monotonic())
            event, event_id, data, retry = None, None, [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)
        elif name == "retry" and value.isdigit():
            retry = int(value)


class Follower:
    """One client following one user's stream at base_url (HAProxy or a replica)."""

    def __init__(self, base_url: str, token: str, *, reconnect: bool = True) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.reconnect = reconnect
        self.tasks: dict[str, dict[str, Any]] = {}  # the client's copy: id -> task
        self.received: list[Message] = []  # every `changes` and `up-to-date` event, in order
        # Every due reminder received, with its arrival (Unix seconds: compared with remind_at).
        self.reminders_due: list[tuple[dict[str, Any], float]] = []
        self.last_event_id: str | None = None
        self.retry_ms = FIRST_RETRY_MILLISECONDS
        self.connects = 0
        self.endings: Counter[str] = Counter()  # why each stream ended
        self._arrived = asyncio.Event()
        self._stopped = False

    @property
    def reconnects(self) -> int:
        return max(self.connects - 1, 0)

    async def run(self) -> None:
        """Follow until stop() (or, without `reconnect`, until the first stream ends)."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(
                30, read=None)) as http:
            while not self._stopped:
                self.endings[await self._follow_once(http)] += 1
                if self._stopped or not self.reconnect:
                    return
                await asyncio.sleep(self.retry_ms / 1000)

    def stop(self) -> None:
        self._stopped = True

    async def _follow_once(self, http: httpx.AsyncClient) -> str:
        headers = dict(self.headers)
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        self.connects += 1
        try:
            async with http.stream("GET", EVENTS_PATH, headers=headers) as response:
                if response.status_code != 200:
                    return f"status {response.status_code}"
                async for message in messages(response):
                    self._apply(message)
        except httpx.TransportError as exc:  # a cut connection: a reconnect resumes it
            return type(exc).__name__
        return "ended"

    def _apply(self, message: Message) -> None:
        if message.retry is not None:
            self.retry_ms = message.retry
        if message.event == "changes":
            data = message.json()
            for task in data["tasks"]:
                self.tasks[task["id"]] = task
            for tombstone in data["deleted"]:
                self.tasks.pop(tombstone["id"], None)
            arrived = time.time()
            self.reminders_due.extend((due, arrived) for due in data["reminders_due"])
        if message.event in ("changes", "up-to-date"):
            self.received.append(message)
            # The id is set once the event is applied: a reconnect resumes after it.
            self.last_event_id = message.id
            self._arrived.set()

    async def wait_for(self, found: Callable[[list[Message]], Any], timeout: float) -> Any:
        """Until found(received) is truthy (checked at each new event); returns it."""
        deadline = time.monotonic() + timeout
        while True:
            self._arrived.clear()
            result = found(self.received)
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"not found in {timeout} s; {len(self.received)} events, "
                                   f"streams ended: {dict(self.endings)}")
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass


def arrival_of(task_id: str, version: int | None) -> Callable[[list[Message]], float | None]:
    """A wait_for() condition: when the first event carrying `task_id` at `version` or later
    (None: its tombstone) arrived."""

    def found(received: list[Message]) -> float | None:
        for message in received:
            if message.event != "changes":
                continue
            data = message.json()
            if version is None:
                if any(t["id"] == task_id for t in data["deleted"]):
                    return message.arrived
            elif any(t["id"] == task_id and t["version"] >= version for t in data["tasks"]):
                return message.arrived
        return None

    return found


def caught_up_after(task_id: str, version: int | None) -> Callable[[list[Message]], bool]:
    """A wait_for() condition: an `up-to-date` event came after the event carrying `task_id`
    at `version` (None: its tombstone). That round's snapshot held that write and everything
    committed before it, and the round delivered all of it: with no write after that one, the
    copy is complete (so wait for the *last* write: a delete after it would still be owed)."""
    carries = arrival_of(task_id, version)

    def found(received: list[Message]) -> bool:
        for index, message in enumerate(received):
            if message.event == "changes" and carries([message]) is not None:
                return any(later.event == "up-to-date" for later in received[index + 1:])
        return False

    return found
