"""A chore that every replica runs now and then (purging what has expired). Chores here are
idempotent single statements, so replicas running them at once only repeat each other's work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from impl.platform.errors import DATABASE_DOWN

log = logging.getLogger("task_api.periodic")


def running_every(
    seconds: float, chore: Callable[[], Awaitable[object]], name: str
) -> AbstractAsyncContextManager[None]:
    """Runs `chore` once now and every `seconds` while the block runs; a failure is logged
    and the chore tried again next time (running_paced, with a chore that always waits
    `seconds`)."""

    async def paced() -> float:
        await chore()
        return seconds

    return running_paced(seconds, paced, name)


@asynccontextmanager
async def running_paced(
    most_seconds: float, chore: Callable[[], Awaitable[float]], name: str
) -> AsyncIterator[None]:
    """Runs `chore` again after the seconds it returns (at most `most_seconds`) while the
    block runs: a chore that knows when its next work is due sleeps just that long. A failure
    is logged and the chore tried again after `most_seconds`."""

    async def loop() -> None:
        while True:
            wait = most_seconds
            try:
                wait = min(max(await chore(), 0.0), most_seconds)
            except DATABASE_DOWN as error:
                log.warning("%s: database unavailable (%s); next try in %.1f s",
                            name, type(error).__name__, most_seconds)
            except Exception:
                log.exception("%s failed; next try in %.1f s", name, most_seconds)
            await asyncio.sleep(wait)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
