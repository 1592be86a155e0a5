"""Bearer JWT -> Principal. The dependency that the generated stubs put on secured operations.

It also applies the rate limits (impl/http/rate_limit.py): per user once the token is accepted, per
client address while it is not (so guessing tokens is throttled too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import Request

from impl.http.errors import TooManyRequests, Unauthorized
from impl.http.rate_limit import RateLimiter
from impl.http.state import lifespan_state
from impl.platform.token_verifier import TokenRefused, TokenVerifier

log = logging.getLogger("task_api.auth")


@dataclass(frozen=True, slots=True)
class Principal:
    # The token's `sub`, opaque: Better Auth's default ids, UUIDs, serial numbers, custom ids.
    user_id: str
    # When the token stops being valid (Unix seconds, its `exp` plus the leeway): a response
    # that outlasts the request (an event stream) must not outlive its credential.
    valid_until: float = float("inf")


@dataclass(frozen=True, slots=True)
class RateLimits:
    per_user: RateLimiter
    per_address: RateLimiter


@dataclass(frozen=True, slots=True)
class Authentication:
    """What `authenticate` uses: the app's lifespan state holds it under STATE_KEY."""

    verifier: TokenVerifier
    limits: RateLimits | None


STATE_KEY = "authentication"
# An in-process request made on behalf of one the user already paid for (an MCP tool call runs
# its operation as a second request: impl/mcp/tools.py) carries this scope key, so one call
# counts once. Only code in this process can set an ASGI scope key; no client can.
ALREADY_COUNTED = "task_api.rate_limit_already_counted"


def _limit(request: Request, limiter: RateLimiter, key: str) -> None:
    decision = limiter.take(key)
    if not decision.allowed:
        request.state.refused = limiter.name  # counted by impl/http/observe.py
        raise TooManyRequests(decision.retry_after, decision.headers)
    request.state.rate_limit = decision  # the request-context middleware sends its headers


async def authenticate(request: Request) -> Principal:
    authentication: Authentication = lifespan_state(request, STATE_KEY)
    limits = authentication.limits
    try:
        user_id, valid_until = await _verified_user(request, authentication.verifier)
    except (Unauthorized, TokenRefused) as refused:
        # Why, for the metrics (impl/http/observe.py): the verifier's reason, or no token at all.
        request.state.token_refused = (
            refused.reason if isinstance(refused, TokenRefused) else "missing"
        )
        if limits is not None:
            _limit(request, limits.per_address, request.client.host if request.client else "")
        raise
    if limits is not None and not request.scope.get(ALREADY_COUNTED):
        _limit(request, limits.per_user, user_id)
    request.state.user_id = user_id  # for the access log
    return Principal(user_id=user_id, valid_until=valid_until)


async def _verified_user(request: Request, verifier: TokenVerifier) -> tuple[str, float]:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("Authorization header required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header required")
    try:
        token = token.strip()
        return await verifier.verify(token), verifier.expires_at(token)
    except TokenRefused as refused:
        # The reason only: never the token, its claims or a key (the request id comes with it).
        log.warning("token refused", extra={"reason": refused.reason})
        raise
