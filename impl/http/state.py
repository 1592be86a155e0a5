"""What the app's lifespan opened (pool, store, token verifier...), handed to each request.

The lifespan (impl/app.py) yields a mapping; Starlette (through uvicorn) gives every request a
copy of it as `request.state`. Request-only dependencies read their part from there and the
generated stubs pass it to the handlers as an argument: nothing is looked up from a global or a
context variable, and two apps in one process (tests) never see each other's resources.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from impl.platform.errors import Unavailable


def lifespan_state(request: Request, key: str) -> Any:
    """The lifespan's value under `key`; 503 when there is none (the app is not started)."""
    value = request.scope.get("state", {}).get(key)
    if value is None:
        raise Unavailable("Server is starting or stopping")
    return value
