"""Bearer JWT -> Principal. The dependency that the generated stubs put on secured operations."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from fastapi import Request

from impl.errors import Unauthorized
from impl.token_verifier import TokenVerifier


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID


async def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("Authorization header required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header required")
    verifier: TokenVerifier = request.app.state.verifier
    user_id = await verifier.verify(token.strip())
    request.state.user_id = str(user_id)  # for the access log
    return Principal(user_id=user_id)
