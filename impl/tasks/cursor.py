"""Opaque, sealed keyset cursors.

A cursor marks a position: the last task of a page, with every key the list can sort on. So it
continues a listing in whatever order and filters the next request asks for (normally the same
ones), and it needs no database lookup. Those keys include the task's title and dates, so the
position is sealed (impl/platform/sealed.py: AES-GCM, bound to its user): a cursor reveals
nothing to access logs, proxies or browser history, and a tampered cursor, or another user's,
is a 422. Stateless: any replica with the same secret continues any replica's listing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from impl.platform.errors import InvalidInput
from impl.platform.sealed import Sealer

# What the key is derived for: a cursor never opens as any other sealed token.
PURPOSE = "list cursor"
# The sort keys of a task, as PostgreSQL prints them (exact round trip through ::text).
KEYS = ("created_at", "updated_at", "title", "priority", "due_date")


@dataclass(frozen=True)
class Position:
    task_id: uuid.UUID
    keys: dict[str, str | None]


def _invalid() -> InvalidInput:
    return InvalidInput(
        "query.cursor", "Invalid cursor: pass meta.next_cursor back unchanged", "cursor_invalid"
    )


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._sealer = Sealer(secret, PURPOSE)

    def encode(self, user_id: str, position: Position) -> str:
        document = [str(position.task_id), *(position.keys[key] for key in KEYS)]
        payload = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        return self._sealer.seal(user_id, payload)

    def decode(self, user_id: str, cursor: str) -> Position:
        payload = self._sealer.open(user_id, cursor)
        if payload is None:  # not sealed here, for this user, with this secret
            raise _invalid()
        task_id, *values = json.loads(payload)
        return Position(task_id=uuid.UUID(task_id), keys=dict(zip(KEYS, values, strict=True)))
