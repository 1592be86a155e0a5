"""Reads a text/event-stream response as a browser's EventSource would (the HTML standard's
parsing rules, for the fields this API sends), without a library that could hide a mistake."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class ServerSentEvent:
    event: str  # "message" when the stream named none
    data: str
    id: str | None
    retry: int | None = None
    comment: str | None = None  # a comment line alone (": heartbeat")

    def json(self) -> Any:
        return json.loads(self.data)


async def events(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    """Each dispatched event, each retry field and each comment, in order."""
    name, data, last_id = "", [], None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield ServerSentEvent(name or "message", "\n".join(data), last_id)
            name, data = "", []
            continue
        if line.startswith(":"):
            yield ServerSentEvent("", "", last_id, comment=line[1:].strip())
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
        elif key == "id":
            last_id = value
        elif key == "retry" and value.isdigit():
            yield ServerSentEvent("", "", last_id, retry=int(value))
