"""The Prometheus metrics the API exports: every metric object, in one class.

`task-api serve` with METRICS_PORT runs in prometheus_client's multiprocess mode (whatever the
number of workers: one code path): each process writes its values to files in a directory of
its own server (PROMETHEUS_MULTIPROC_DIR, set by the serve command before any worker starts),
and the serve command's process answers scrapes by adding the files up (`serve_metrics`). The
objects are created without a registry (no import-time global): in multiprocess mode the files
are the registry, and two apps in one process (tests) never clash.

Labels are bounded by construction: an operation is the contract's operationId (or a route's
name, or `unmatched`), a status a class (`2xx`...), a reason one of the token verifier's fixed
messages, a refusal one of a few kinds. Never a raw path, a user id or a token.

Adding a metric: one attribute here, named `task_api_<what>_<unit>`, and
one call where it happens (it has `metrics` from the lifespan state, as the live streams do):

    self.reminder_lag = Histogram(
        "task_api_reminder_lag_seconds", "Seconds from a reminder's due time to its delivery.",
        buckets=LAG_BUCKETS, registry=None)
    ...
    metrics.reminder_lag.observe(delivered_at - due_at)

A gauge needs `multiprocess_mode="livesum"` (the live processes' values added up). Anything
observed on every request is counted in memory and published once a second (BatchedHistogram,
a gauge read by sample_every_second): in multiprocess mode each direct write is a write to a
shared file.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
    values,
)

from impl.platform.batched_histogram import BatchedHistogram

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client itself

# Seconds. Most requests take 1-10 ms here; the tail (a cold pool, a busy machine) and the
# event streams (which last as long as the page) reach the last ones.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ACQUIRE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
# For the reminders' lag (seconds from due to delivered), when they land.
LAG_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
# A webhook attempt: a local endpoint answers in milliseconds, a far one in a second; the
# timeout (WEBHOOK_TIMEOUT_SECONDS, 10 s by default) ends the rest.
WEBHOOK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_NOT_A_WORD = re.compile(r"[^a-z0-9]+")


def reason_label(message: str) -> str:
    """A refused token's reason as a label: "Invalid token: bad signature" -> `bad_signature`,
    "Token expired" -> `token_expired`. The messages are the verifier's fixed constants, so the
    labels are a fixed set too."""
    _, _, detail = message.rpartition(": ")
    return _NOT_A_WORD.sub("_", (detail or message).lower()).strip("_") or "invalid"


_STATUS_CLASSES = {digit: f"{digit}xx" for digit in range(1, 6)}


def status_class(status: int | None) -> str:
    """200 -> `2xx`; `none` for no status (a webhook endpoint that never answered)."""
    if status is None:
        return "none"
    return _STATUS_CLASSES.get(status // 100) or f"{status // 100}xx"


class Metrics:
    def __init__(self) -> None:
        self.request_duration = Histogram(
            "task_api_http_request_duration_seconds",
            "HTTP requests by the contract's operationId and status class, and how long each "
            "took (its _count is the request count).",
            ["operation", "status_class"], buckets=LATENCY_BUCKETS, registry=None,
        )
        self.in_flight = Gauge(
            "task_api_http_requests_in_flight", "HTTP requests being served (event streams too).",
            multiprocess_mode="livesum", registry=None,
        )
        self.pool_size = Gauge(
            "task_api_db_pool_connections", "Connections open in the database pool.",
            multiprocess_mode="livesum", registry=None,
        )
        self.pool_in_use = Gauge(
            "task_api_db_pool_connections_in_use", "Pooled connections lent to an operation.",
            multiprocess_mode="livesum", registry=None,
        )
        self.pool_max = Gauge(
            "task_api_db_pool_connections_max", "The pool's size limit (DB_POOL_MAX_SIZE).",
            multiprocess_mode="livesum", registry=None,
        )
        self.pool_waiting = Gauge(
            "task_api_db_pool_waiting", "Operations waiting for a pooled connection.",
            multiprocess_mode="livesum", registry=None,
        )
        # Only when no connection was idle (an idle one is taken at once, in microseconds).
        self.pool_wait = Histogram(
            "task_api_db_pool_wait_seconds", "Time to get a pooled connection when none was "
            "idle (a new connection, or one given back).", buckets=ACQUIRE_BUCKETS, registry=None,
        )
        self.tokens_refused = Counter(
            "task_api_auth_tokens_refused", "Requests refused a 401, by reason (`missing`: no "
            "bearer token at all).", ["reason"], registry=None,
        )
        self.jwks_fetches = Counter(
            "task_api_auth_jwks_fetches", "Fetches of the JWKS document, by outcome.",
            ["outcome"], registry=None,
        )
        self.refusals = Counter(
            "task_api_refusals", "Requests refused by an abuse control: `per-user` and "
            "`per-address` rate limits, the task `quota`, the per-user `streams` cap.",
            ["kind"], registry=None,
        )
        self.open_streams = Gauge(
            "task_api_open_streams", "Event streams (GET /api/tasks/events) open.",
            multiprocess_mode="livesum", registry=None,
        )
        self.reminder_lag = Histogram(
            "task_api_reminder_lag_seconds",
            "Seconds from a reminder's due time to its firing (the commit that puts it in the "
            "change feed and wakes its user's streams).",
            buckets=LAG_BUCKETS, registry=None,
        )
        self.reminders_fired = Counter(
            "task_api_reminders_fired", "Reminders fired by this process's scheduler.",
            registry=None,
        )
        # Webhooks (impl/webhooks/worker.py): each attempt, and each delivery given up.
        self.webhook_attempts = Counter(
            "task_api_webhook_attempts", "Webhook delivery attempts by outcome: `delivered` "
            "(a 2xx), `failed` (any other answer, a timeout, no connection), `refused` (the "
            "endpoint's name resolved to an address the server must not call); `status_class` "
            "the endpoint's answer (`none`: no answer).",
            ["outcome", "status_class"], registry=None,
        )
        self.webhook_attempt_duration = Histogram(
            "task_api_webhook_attempt_duration_seconds",
            "How long a webhook delivery attempt took, by outcome (as above).",
            ["outcome"], buckets=WEBHOOK_BUCKETS, registry=None,
        )
        self.webhook_delivery_lag = Histogram(
            "task_api_webhook_delivery_lag_seconds",
            "Seconds from the change that made a webhook delivery to the endpoint's 2xx "
            "(retries included).", buckets=LAG_BUCKETS, registry=None,
        )
        self.webhooks_given_up = Counter(
            "task_api_webhook_deliveries_given_up", "Webhook deliveries failed for good, by "
            "reason: `retries_exhausted` (WEBHOOK_RETRY_FOR_SECONDS passed), `gone` (the "
            "endpoint answered 410: its subscription is disabled).",
            ["reason"], registry=None,
        )
        # Observed on every request: counted in memory, published once a second (see
        # batched_histogram.py: each direct observation is a write to a shared file).
        self.requests = BatchedHistogram(self.request_duration)
        self.pool_waits = BatchedHistogram(self.pool_wait)
        # Gauges read from their source now and then (sample()), not kept up to date on every
        # change: a pool's size changes on every request, a scrape comes every few seconds, and
        # each gauge change is a write to a shared file.
        self._sampled: list[tuple[Gauge, Callable[[], float]]] = []
        self.requests_in_flight = 0  # kept by impl/http/observe.py
        self.sample_every_second(self.in_flight, lambda: self.requests_in_flight)

    def sample_every_second(self, gauge: Gauge, read: Callable[[], float]) -> None:
        self._sampled.append((gauge, read))

    def publish(self) -> None:
        """What the scrape reads: the sampled gauges, and the histograms counted in memory
        since the last publish. Once a second, and when the process stops."""
        for gauge, read in self._sampled:
            gauge.set(read())
        self.requests.publish()
        self.pool_waits.publish()

    async def publish_now(self) -> None:  # for running_every
        self.publish()


def in_multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_VARIABLE))


def forget_this_process() -> None:
    """At a worker's exit: its live gauges stop counting (in-flight, pool, streams); its
    counters and histograms stay in the sums, as a counter must."""
    if in_multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


@contextmanager
def serving_metrics(host: str, port: int) -> Iterator[None]:
    """For `task-api serve`: a fresh multiprocess directory for this server (set in the
    environment, so every worker it starts writes there), and the scrape endpoint on
    host:port (any path, `/metrics` included) adding up every process's files. Call before
    anything imports the app. The directory goes at exit: a restart starts from zero, as
    Prometheus expects of a restarted target."""
    directory = tempfile.mkdtemp(prefix="task-api-metrics-")
    os.environ[MULTIPROC_DIR_VARIABLE] = directory
    # prometheus_client picks its value class when first imported: if that was before now, in
    # this process (one worker: the app runs here), pick again, or this process would count in
    # memory where no scrape reads it.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    server, thread = start_http_server(port, addr=host, registry=registry)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        shutil.rmtree(directory, ignore_errors=True)
