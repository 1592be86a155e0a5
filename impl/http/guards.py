"""Pure-ASGI checks before a request reaches a route: a method the contract documents for the
path (405), and for requests with a body, JSON only (415) and a size limit (413).

The method check answers at once. The body checks wrap `receive`, so they only act when a route
actually reads a body, and raise typed errors there, which FastAPI passes to the error handlers.
"""

from __future__ import annotations

import functools
from email.message import Message

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from impl.http.errors import (
    PayloadTooLarge,
    UnsupportedMediaType,
    error_response,
    method_not_allowed,
)

BODY_METHODS = {"POST", "PUT", "PATCH"}


@functools.lru_cache(maxsize=64)
def is_json(content_type: str | None) -> bool:
    """A pure function of the header's text, which clients repeat on every request: parsed once
    (the email parser builds a message per call)."""
    if not content_type:
        return False
    parsed = Message()
    parsed["content-type"] = content_type
    subtype = parsed.get_content_subtype()
    return parsed.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class RequestGuardMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A method the contract does not document for a path is a 405, even when a templated
        # route would take it (DELETE /items/stats: `stats` is not an item id).
        refused = method_not_allowed(scope["method"], scope["path"])
        if refused is not None:
            await error_response(refused)(scope, receive, send)
            return
        # Only requests that carry a body are guarded: a FileResponse (the docs assets) also
        # calls receive(), to watch for a disconnect, and must not be refused.
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        await self.app(scope, self._guarded(scope, receive), send)

    def _guarded(self, scope: Scope, receive: Receive) -> Receive:
        content_types = [v for k, v in scope["headers"] if k == b"content-type"]
        # Content-Type is a singleton field: two lines ("a, b") name no media type at all.
        content_type = content_types[0].decode("latin-1") if len(content_types) == 1 else None
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        limit = self.max_body_bytes
        received = 0
        checked = False

        async def guarded_receive() -> AsgiMessage:
            nonlocal received, checked
            if not checked:
                checked = True
                if not is_json(content_type):
                    raise UnsupportedMediaType()
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
            return message

        return guarded_receive
