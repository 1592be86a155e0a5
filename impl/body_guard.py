"""Pure-ASGI guard on request bodies: a documented method (405), JSON only (415) and a size
limit (413), checked in that order.

It wraps `receive`, so it only acts when a route actually reads a body, and it raises typed
errors there, which FastAPI passes through to the error handlers.
"""

from __future__ import annotations

from email.message import Message

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from impl.contract import check_documented_method
from impl.errors import PayloadTooLarge, UnsupportedMediaType

BODY_METHODS = {"POST", "PUT", "PATCH"}


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    parsed = Message()
    parsed["content-type"] = content_type
    subtype = parsed.get_content_subtype()
    return parsed.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class BodyGuardMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only requests that carry a body are guarded: a FileResponse (the docs assets) also
        # calls receive(), to watch for a disconnect, and must not be refused.
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        content_types = [v for k, v in scope["headers"] if k == b"content-type"]
        # Content-Type is a singleton field: two lines ("a, b") name no media type at all.
        content_type = content_types[0].decode("latin-1") if len(content_types) == 1 else None
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        limit = self.max_body_bytes
        too_large = PayloadTooLarge(f"Request body exceeds {limit} bytes")
        received = 0
        checked = False

        async def guarded_receive() -> AsgiMessage:
            nonlocal received, checked
            if not checked:
                checked = True
                check_documented_method(scope["method"], scope["path"])
                if not is_json(content_type):
                    raise UnsupportedMediaType()
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large
            return message

        await self.app(scope, guarded_receive, send)
