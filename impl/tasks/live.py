"""The live stream: the change feed (impl/tasks/changes.py) pushed as it commits. The handler
writes these messages as Server-Sent Events (impl/http/sse.py).

A stream reads the feed from its position until it has caught up, sends what it read (each
event's id is the sync token after it, so `Last-Event-ID` resumes exactly there), says
`up-to-date`, then sleeps until a commit of its user wakes it (LISTEN/NOTIFY,
impl/platform/notifications.py), or, without a listener, until its next poll. It registers
its wake-up before its first read, so a commit between the read and the sleep is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from impl.platform.errors import TooManyOpen
from impl.platform.notifications import Notifications
from impl.tasks.changes import ChangeFeed, ChangePage
from impl.tasks.sync_token import SyncPosition, SyncTokenCodec

PAGE_SIZE = 200


@dataclass(frozen=True, slots=True)
class Event:
    """An event of the stream: its name, its data (JSON-ready) and its id (a sync token)."""

    name: str
    data: dict[str, Any]
    event_id: str


@dataclass(frozen=True, slots=True)
class Retry:
    """How long the client should wait before it reconnects."""

    milliseconds: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing happened: a line that keeps proxies from closing the idle connection."""


Message = Event | Retry | Heartbeat
RETRY_MILLISECONDS = 3000  # a dropped client reconnects after this
CLOSING_RETRY_MILLISECONDS = 1000  # when the server stops: come back soon, to another replica


@dataclass(frozen=True, slots=True)
class StreamSettings:
    heartbeat_seconds: float
    poll_seconds: float  # without a listener (behind a transaction pooler)
    max_per_user: int


class LiveStreams:
    """The open streams of this process, counted per user (the cap)."""

    def __init__(
        self,
        feed: ChangeFeed,
        tokens: SyncTokenCodec,
        notifications: Notifications,
        settings: StreamSettings,
    ) -> None:
        self.feed = feed
        self.tokens = tokens
        self.notifications = notifications
        self.settings = settings
        self.open_per_user: Counter[str] = Counter()

    @property
    def open_streams(self) -> int:
        return sum(self.open_per_user.values())

    async def open(
        self,
        *,
        user_id: str,
        position: SyncPosition | None,
        closing: asyncio.Event | None,
        valid_until: float = float("inf"),
    ) -> AsyncIterator[Message]:
        """The stream's messages. Refuses (429) a user who has the most streams open already;
        reads the first page before the response starts, so an expired or foreign token is a
        410 or 422 envelope, not a broken stream. Ends, with a retry hint, when `closing` is set
        (the server stops) or at `valid_until` (Unix seconds: the bearer token expires, and the
        client reconnects with a fresh one; a revoked user's stream does not run on)."""
        if self.open_per_user[user_id] >= self.settings.max_per_user:
            raise TooManyOpen(
                f"Too many open streams: at most {self.settings.max_per_user} per user on one "
                "server; close one first"
            )
        stream = _OpenStream(self, user_id)
        try:
            first = await self.read_page(user_id, position)
        except BaseException:
            stream.release()
            raise
        return stream.messages(
            self._messages(stream, first, closing or asyncio.Event(), valid_until)
        )

    async def read_page(self, user_id: str, position: SyncPosition | None) -> ChangePage:
        return await self.feed.page(user_id=user_id, position=position, limit=PAGE_SIZE)

    async def _messages(
        self,
        stream: _OpenStream,
        first: ChangePage,
        closing: asyncio.Event,
        valid_until: float,
    ) -> AsyncIterator[Message]:
        waiter = stream.waiter
        yield Retry(RETRY_MILLISECONDS)
        reader = _CatchUp(self, stream.user_id)
        async for message in reader.events(first, always_up_to_date=True):
            yield message
        last_sent = time.monotonic()
        while True:
            # Sleep until a commit of this user, the server closing, a heartbeat or a poll.
            timeout = self.settings.heartbeat_seconds - (time.monotonic() - last_sent)
            if not self.notifications.listening:
                timeout = min(timeout, self.settings.poll_seconds)
            timeout = min(timeout, valid_until - time.time())
            await _first_of(waiter.woken, closing, max(timeout, 0.0))
            if closing.is_set() or time.time() >= valid_until:
                break
            if waiter.woken.is_set() or not self.notifications.listening:
                waiter.woken.clear()  # before the read: a commit during it wakes us again
                page = await self.read_page(stream.user_id, reader.position)
                async for message in reader.events(page, always_up_to_date=False):
                    yield message
                    last_sent = time.monotonic()
            if time.monotonic() - last_sent >= self.settings.heartbeat_seconds:
                yield Heartbeat()
                last_sent = time.monotonic()
        yield Retry(CLOSING_RETRY_MILLISECONDS)


class _CatchUp:
    """Reads one stream's feed until caught up, a page at a time: each page is sent as it is
    read (a first sync of 100,000 tasks holds one page of 200 in memory, not all of them)."""

    def __init__(self, streams: LiveStreams, user_id: str) -> None:
        self.streams = streams
        self.user_id = user_id
        self.position: SyncPosition | None = None

    async def events(self, page: ChangePage, *, always_up_to_date: bool) -> AsyncIterator[Event]:
        """A `changes` event per page that holds any, then one `up-to-date` event (always on
        the stream's first catch-up, else after changes)."""
        sent = False
        while True:
            self.position = page.position
            token = self.streams.tokens.encode(self.user_id, page.position)
            if page.tasks or page.deleted or page.reminders_due:
                sent = True
                yield Event("changes", page.contents(), token)
            if not page.has_more:
                if sent or always_up_to_date:
                    yield Event("up-to-date", {"sync_token": token}, token)
                return
            page = await self.streams.read_page(self.user_id, page.position)


class _OpenStream:
    """One open stream: counted against its user's cap, and its wake-up registered, from
    open() until its messages end, fail or are dropped unread (a client that went away
    before the first byte: the response never iterates them)."""

    def __init__(self, streams: LiveStreams, user_id: str) -> None:
        self.streams = streams
        self.user_id = user_id
        # Registered before the first read: a commit from then on wakes the stream.
        self.waiter = streams.notifications.wait_for(user_id)
        streams.open_per_user[user_id] += 1
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.streams.notifications.forget(self.waiter)
        counts = self.streams.open_per_user
        counts[self.user_id] -= 1
        if counts[self.user_id] <= 0:
            del counts[self.user_id]

    async def messages(self, inner: AsyncIterator[Message]) -> AsyncIterator[Message]:
        try:
            async for message in inner:
                yield message
        finally:
            self.release()

    def __del__(self) -> None:
        self.release()


async def _first_of(woken: asyncio.Event, closing: asyncio.Event, timeout: float) -> bool:
    """True when `woken` or `closing` is set within `timeout` seconds."""
    if woken.is_set() or closing.is_set():
        return True
    waits = [asyncio.ensure_future(woken.wait()), asyncio.ensure_future(closing.wait())]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return bool(done)
    finally:
        for wait in waits:
            if not wait.done():
                wait.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await wait
