"""Bearer JWT -> Principal. The dependency that the generated stubs put on secured operations."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import Request

from impl.errors import Unauthorized
from impl.token_verifier import TokenRefused, TokenVerifier

log = logging.getLogger("task_api.auth")


@dataclass(frozen=True, slots=True)
class Principal:
    # The token's `sub`, opaque: Better Auth's default ids, UUIDs, serial numbers, custom ids.
    user_id: str


async def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("Authorization header required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header required")
    verifier: TokenVerifier = request.app.state.verifier
    try:
        user_id = await verifier.verify(token.strip())
    except TokenRefused as refused:
        # The reason only: never the token, its claims or a key (the request id comes with it).
        log.warning("token refused", extra={"reason": refused.reason})
        raise
    request.state.user_id = user_id  # for the access log
    return Principal(user_id=user_id)
