"""The live streams' listener (impl/platform/notifications.py) outlives errors that are not a
dropped connection. DATABASE_LISTEN_URL names a role that does not exist yet: PostgreSQL refuses
the login (SQLSTATE 28000, not one of the "database down" errors). The listener used to end
there, silently, and the server polled until restarted; it must log the error, keep trying,
and LISTEN once the role exists, from then on waking streams at each commit.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from tests.support.factories import new_user
from tests.support.live_client import Follower, arrival_of
from tests.support.servers import running_server, settings

SETUP_TIMEOUT = 30.0
RECONNECT_WITHIN = 20.0  # the listener's backoff reaches 10 s at most, and this machine is shared
NEVER = 60.0  # poll and heartbeat (their maximum): a stream the listener does not wake waits this long


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def listener_log() -> Iterator[Records]:
    logger = logging.getLogger("task_api.notifications")
    records = Records()
    logger.addHandler(records)
    try:
        yield records
    finally:
        logger.removeHandler(records)


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


async def until(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_the_listener_keeps_trying_after_a_refused_login_and_then_listens(
    database_url: str, db: asyncpg.Connection, listener_log: Records
) -> None:
    role = f"listen_{secrets.token_hex(4)}"
    app_settings = settings(database_url, database_listen_url=as_role(database_url, role),
                            sync_poll_seconds=NEVER, sync_heartbeat_seconds=NEVER)
    user = new_user()
    try:
        with running_server(app_settings) as base_url:
            refused = f"task_changes listener: InvalidAuthorizationSpecificationError: role \"{role}\""
            await until(lambda: any(refused in m for m in listener_log.messages), SETUP_TIMEOUT)
            await db.execute(f'CREATE ROLE "{role}" LOGIN')
            follower = Follower(base_url, user.token, reconnect=False)
            following = asyncio.create_task(follower.run())
            try:
                await follower.wait_for(lambda got: got, SETUP_TIMEOUT)
                async with httpx.AsyncClient(base_url=base_url, timeout=30,
                                             headers=user.headers) as http:
                    # Arrives when the listener is back (it wakes every stream on connecting).
                    first = await http.post("/api/tasks", json={"title": "while refused"})
                    await follower.wait_for(
                        arrival_of(first.json()["data"]["id"], 1), RECONNECT_WITHIN)
                    # From now on each commit wakes the stream (polling would take NEVER).
                    second = await http.post("/api/tasks", json={"title": "listening"})
                    written_at = time.monotonic()
                    arrived = await follower.wait_for(
                        arrival_of(second.json()["data"]["id"], 1), SETUP_TIMEOUT)
            finally:
                follower.stop()
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
    finally:
        await db.execute(f'DROP ROLE IF EXISTS "{role}"')
    assert arrived - written_at < 1.0
