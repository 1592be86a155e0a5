"""When a failed delivery is tried again: exponential backoff with jitter, for a time window.

The n-th retry waits base * 2^(n-1) seconds, at most an hour, times a random factor in
[0.5, 1] (so endpoints that fail together are not retried all at once). With the default
base of 5 s: about 5 s, 10 s, 20 s, ... 43 min, then hourly, until WEBHOOK_RETRY_FOR_SECONDS
(two days) after the event was recorded: then the delivery has failed.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

MAX_DELAY_SECONDS = 3600.0


def delay_seconds(attempt: int, base_seconds: float) -> float:
    """The wait after failed attempt number `attempt` (1 for the first)."""
    ceiling: float = min(base_seconds * 2.0 ** min(attempt - 1, 30), MAX_DELAY_SECONDS)
    factor: float = random.uniform(0.5, 1.0)
    return ceiling * factor  # jitter, not a secret


def next_retry(
    attempt: int, base_seconds: float, retry_since: datetime, retry_for_seconds: float,
    now: datetime,
) -> float | None:
    """Seconds until the next attempt, or None when the window is over."""
    delay = delay_seconds(attempt, base_seconds)
    if now + timedelta(seconds=delay) > retry_since + timedelta(seconds=retry_for_seconds):
        return None
    return delay
