"""The delivery worker each replica runs: claim due deliveries, send them, record the results.

Woken by NOTIFY webhook_deliveries (sent at the commit of a change that recorded deliveries, so
commit-to-delivery is one claim and one request) and every `poll_seconds` for retries falling
due. Attempts run concurrently up to `concurrency` per replica; the claim keeps at most
`max_in_flight_per_endpoint` attempts in flight to one endpoint across all replicas (queue.py).

Ordering: deliveries to one endpoint are claimed in the order they fell due, but with several
in flight at once, and retries, a later event can arrive before an earlier one. Each task event
carries the task's `version`: a receiver keeps the highest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from impl.platform.database import Database
from impl.platform.errors import DATABASE_DOWN
from impl.platform.metrics import Metrics, status_class
from impl.platform.notifications import Notifications
from impl.webhooks import queue
from impl.webhooks.backoff import next_retry
from impl.webhooks.sender import Answer, Sender

log = logging.getLogger("task_api.webhooks")

LEASE_MARGIN_SECONDS = 2.0
GONE = 410


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    concurrency: int
    max_in_flight_per_endpoint: int
    timeout_seconds: float
    retry_base_seconds: float
    retry_for_seconds: float
    poll_seconds: float = 1.0


def result_of(claim: queue.Claim, answer: Answer, settings: WorkerSettings) -> queue.Result:
    def result(state: str, retry: float | None = None, disable: str | None = None) -> queue.Result:
        return queue.Result(state, retry, answer.status_code, answer.latency_ms, answer.error,
                            answer.excerpt, disable)

    if answer.error is None:
        return result("succeeded")
    if answer.status_code == GONE:
        return result("failed", disable="the endpoint answered 410 Gone")
    retry = next_retry(claim.attempt, settings.retry_base_seconds, claim.retry_since,
                       settings.retry_for_seconds, datetime.now(UTC))
    return result("failed") if retry is None else result("pending", retry)


class DeliveryWorker:
    def __init__(self, database: Database, notifications: Notifications, sender: Sender,
                 settings: WorkerSettings, metrics: Metrics) -> None:
        self.database = database
        self.metrics = metrics
        self.notifications = notifications
        self.sender = sender
        self.settings = settings
        self.lease_seconds = settings.timeout_seconds + LEASE_MARGIN_SECONDS
        self._attempts: set[asyncio.Task[None]] = set()
        self._waiter = notifications.wait_for("")

    async def run(self) -> None:
        woken = self._waiter.woken
        # While deliveries wait (the last claim filled every free slot), claim in batches of a
        # quarter of the slots rather than one per finished attempt: a claim is a transaction
        # under the claims' lock, and one per delivery would cap a replica at the claims' rate.
        batch = max(1, self.settings.concurrency // 4)
        backlog = False
        while True:
            woken.clear()
            free = self.settings.concurrency - len(self._attempts)
            claimed: list[queue.Claim] = []
            if free >= (batch if backlog else 1):
                try:
                    async with self.database.connection() as connection:
                        claimed = await queue.claim(
                            connection, free, self.settings.max_in_flight_per_endpoint,
                            self.lease_seconds)
                except DATABASE_DOWN as error:
                    log.warning("webhook claim: database unavailable (%s)", type(error).__name__)
                except Exception:
                    log.exception("webhook claim failed")
                backlog = bool(claimed) and len(claimed) == free
            for claim in claimed:
                task = asyncio.create_task(self._attempt(claim))
                self._attempts.add(task)
                task.add_done_callback(self._attempt_done)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), self.settings.poll_seconds)

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        self._attempts.discard(task)
        self._waiter.woken.set()  # a slot is free

    async def _attempt(self, claim: queue.Claim) -> None:
        answer = await self.sender.send(claim)
        result = result_of(claim, answer, self.settings)
        self._count_attempt(answer)
        try:
            async with self.database.connection() as connection:
                recorded = await queue.finish(connection, claim, result)
        except Exception as error:  # noqa: BLE001 - the lease runs out: it is tried again
            log.warning("webhook %s attempt %d: result not recorded (%s); retried after its lease",
                        claim.id, claim.attempt, type(error).__name__)
            return
        if not recorded:
            log.warning("webhook %s attempt %d: its lease was taken over", claim.id, claim.attempt)
            return
        if answer.error is not None:
            log.info("webhook %s attempt %d failed: %s", claim.id, claim.attempt, answer.error)
        if result.state == "succeeded":
            lag = (datetime.now(UTC) - claim.created_at).total_seconds()
            self.metrics.webhook_delivery_lag.observe(max(lag, 0.0))
        elif result.state == "failed":
            reason = "gone" if result.disable_reason is not None else "retries_exhausted"
            self.metrics.webhooks_given_up.labels(reason).inc()

    def _count_attempt(self, answer: Answer) -> None:
        if answer.error is None:
            outcome = "delivered"
        elif answer.refused:
            outcome = "refused"
        else:
            outcome = "failed"
        self.metrics.webhook_attempts.labels(outcome, status_class(answer.status_code)).inc()
        self.metrics.webhook_attempt_duration.labels(outcome).observe(answer.latency_ms / 1000)

    async def stop(self) -> None:
        """Abandons the attempts in flight at once: shutting down never waits for an endpoint.
        Their leases run out and any replica sends them again (at least once)."""
        for task in list(self._attempts):
            task.cancel()
        if self._attempts:
            await asyncio.wait(set(self._attempts), timeout=5)
        self.notifications.forget(self._waiter)


@asynccontextmanager
async def delivering(worker: DeliveryWorker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.stop()
