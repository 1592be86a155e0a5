"""Per-caller token buckets: a user (or, before a token is accepted, a client address) may send
`burst` requests at once and `rate` per second sustained. Over it: 429 with Retry-After.

In memory, per process: no round trip and no shared state on the request path (a limit shared
through PostgreSQL would add a write to every request). With N processes (workers or replicas)
a caller can reach N times the limit at most; README says so. Buckets are independent, so one
caller's burst never slows another. Idle callers' buckets are full, and a full bucket is the
same as none: they are dropped when the table grows, which bounds its memory.

The state the client sees follows the IETF httpapi RateLimit header fields draft:
`RateLimit-Policy: "per-user";q=<burst>;w=<seconds to refill>` and
`RateLimit: "per-user";r=<remaining>;t=<seconds until full>`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

PRUNE_ABOVE = 100_000  # buckets kept before idle (full) ones are dropped


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy: str  # the RateLimit-Policy value
    state: str  # the RateLimit value
    retry_after: int  # seconds until one request is allowed again (0 when allowed)

    @property
    def headers(self) -> dict[str, str]:
        return {"RateLimit-Policy": self.policy, "RateLimit": self.state}

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """As an ASGI response carries them (the request-context middleware adds them)."""
        return [(b"ratelimit-policy", self.policy.encode()), (b"ratelimit", self.state.encode())]


class RateLimiter:
    def __init__(self, name: str, rate: float, burst: int) -> None:
        """rate: requests per second sustained (> 0); burst: the bucket's size."""
        self.rate = rate
        self.burst = float(burst)
        self.name = name
        refill_seconds = max(1, math.ceil(burst / rate))
        self.policy = f'"{name}";q={burst};w={refill_seconds}'
        # key -> (tokens left, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}
        # The table size that triggers the next pruning. Doubled past what a pruning keeps, so
        # that many busy callers do not make every new caller pay a walk of the whole table.
        self._prune_at = PRUNE_ABOVE

    def take(self, key: str, now: float | None = None) -> Decision:
        """Count one request of `key`."""
        now = time.monotonic() if now is None else now
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= self._prune_at and key not in self._buckets:
            self._prune(now)
        self._buckets[key] = (tokens, now)
        until_full = math.ceil((self.burst - tokens) / self.rate)
        state = f'"{self.name}";r={int(tokens)};t={until_full}'
        retry_after = 0 if allowed else max(1, math.ceil((1.0 - tokens) / self.rate))
        return Decision(allowed, self.policy, state, retry_after)

    def _prune(self, now: float) -> None:
        self._buckets = {
            key: (tokens, then)
            for key, (tokens, then) in self._buckets.items()
            if tokens + (now - then) * self.rate < self.burst
        }
        self._prune_at = max(PRUNE_ABOVE, 2 * len(self._buckets))
