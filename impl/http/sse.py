"""Server-Sent Events on the wire (the HTML standard's text/event-stream): the response and the
lines of each message. Knows no resource: a handler writes the events it has."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

HEADERS = {
    "Cache-Control": "no-cache",
    # nginx and some platforms buffer responses unless told not to; a stream must not wait.
    "X-Accel-Buffering": "no",
}


def event(name: str, data: bytes, event_id: str | None = None) -> bytes:
    """One event. `data` must be one line (JSON from orjson is: it escapes newlines)."""
    lines = [b"event: " + name.encode()]
    if event_id is not None:
        lines.append(b"id: " + event_id.encode())
    lines.append(b"data: " + data)
    return b"\n".join(lines) + b"\n\n"


def comment(text: str) -> bytes:
    """A comment line: ignored by clients, keeps proxies from closing an idle connection."""
    return b": " + text.encode() + b"\n\n"


def retry(milliseconds: int) -> bytes:
    """How long a client waits before it reconnects."""
    return b"retry: " + str(milliseconds).encode() + b"\n\n"


def event_stream(messages: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(messages, media_type="text/event-stream", headers=HEADERS)
