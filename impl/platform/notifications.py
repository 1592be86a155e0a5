"""Wake-ups from PostgreSQL: LISTEN on one channel, and wake whoever waits for a payload.

The writers NOTIFY after their transaction has committed (impl/platform/wake_ups.py: channel
`task_changes`, payload the user id; migration 0010 took the NOTIFY out of the writing
transaction); PostgreSQL delivers it to every connection that LISTENs on that channel, whichever
replica it belongs to. Each process keeps one such connection and wakes the waiters of that
payload, who then read what changed themselves: a notification only says "look again", so one
lost while reconnecting is made good by waking everyone after the reconnect, and one never sent
(a writer other than the API, a crash after the commit) by a poll (`wake`, called by
impl/tasks/feed_watch.py for the keys it finds changed).

LISTEN needs a session of its own: through PgBouncer in transaction mode (Neon's `-pooler` host)
the notifications would go to whatever server connection the LISTEN happened to run on. Without a
direct URL there is no listener, `listening` is False, and the waiters poll instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

import asyncpg

from impl.platform.database import connect_options
from impl.platform.errors import DATABASE_DOWN

log = logging.getLogger("task_api.notifications")

RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 10.0
# How often the listening connection is checked to be alive (a dead TCP connection can stay
# silent): a SELECT 1 on it, bounded by the same time.
KEEPALIVE_SECONDS = 10.0


class Waiter:
    """One waiter for one payload's notifications (a stream of one user)."""

    __slots__ = ("key", "woken")

    def __init__(self, key: str) -> None:
        self.key = key
        self.woken = asyncio.Event()


class Notifications:
    def __init__(self, url: str | None, channel: str) -> None:
        self.url = url
        self.channel = channel
        self.listening = False
        self._waiters: dict[str, set[Waiter]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.received = 0  # notifications received (for tests and the benchmark)

    # -- waiters ---------------------------------------------------------------------------

    def wait_for(self, key: str) -> Waiter:
        waiter = Waiter(key)
        self._waiters[key].add(waiter)
        return waiter

    def forget(self, waiter: Waiter) -> None:
        waiters = self._waiters.get(waiter.key)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[waiter.key]

    def waiting_keys(self) -> list[str]:
        """The keys someone waits for now."""
        return list(self._waiters)

    def wake(self, key: str) -> None:
        """Wake the waiters of `key` as its notification would."""
        self._wake(key)

    def _wake(self, key: str) -> None:
        for waiter in self._waiters.get(key, ()):
            waiter.woken.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.woken.set()

    # -- the listening connection ------------------------------------------------------------

    async def start(self) -> None:
        if self.url is not None:
            self._task = asyncio.create_task(self._listen_forever(self.url))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.listening = False

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self.received += 1
        self._wake(payload)

    async def _listen_forever(self, url: str) -> None:
        delay = RECONNECT_FIRST_SECONDS
        options = connect_options(url, statement_cache=False)
        while True:
            lost = asyncio.Event()
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(
                    options.dsn, statement_cache_size=0, timeout=RECONNECT_MAX_SECONDS
                )
                connection.add_termination_listener(_setter(lost))
                await connection.add_listener(self.channel, self._on_notification)
                self.listening = True
                delay = RECONNECT_FIRST_SECONDS
                # Whatever committed while nobody listened: every waiter looks again.
                self._wake_all()
                log.info("listening for %s notifications", self.channel)
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
                    if not lost.is_set():
                        await connection.fetchval("SELECT 1", timeout=KEEPALIVE_SECONDS)
            except asyncio.CancelledError:
                raise
            except DATABASE_DOWN as error:
                log.warning("%s listener: %s: %s; reconnecting in %.1f s",
                            self.channel, type(error).__name__, error, delay)
            except Exception as error:  # noqa: BLE001 - the listener must outlive any error
                # Anything else (a role refused, a database missing, a proxy's own error while
                # a Neon compute wakes up) ended this task silently: the replica then polled
                # until restarted, with nothing in its log. Say it, and keep trying.
                log.error("%s listener: %s: %s; streams poll meanwhile; reconnecting in %.1f s",
                          self.channel, type(error).__name__, error, delay)
            finally:
                self.listening = False
                if connection is not None and not connection.is_closed():
                    connection.terminate()
            self._wake_all()  # pollers take over until the listener is back
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)


def _setter(event: asyncio.Event) -> Any:
    """A termination listener that sets `event` (asyncpg passes the connection)."""
    return lambda _connection: event.set()
