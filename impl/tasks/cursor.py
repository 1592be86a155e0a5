"""Opaque, signed keyset cursors.

A cursor marks a position: the last task of a page, with every key the list can sort on. So it
continues a listing in whatever order and filters the next request asks for (normally the same
ones), and it needs no database lookup. It is signed and bound to its user: a tampered cursor,
or another user's, is a 422.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass

from impl.platform.errors import InvalidInput

MAC_BYTES = 16
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
        self.secret = secret

    def _mac(self, user_id: str, payload: bytes) -> bytes:
        # Length-prefixed: no user id and payload can pass for another pair.
        owner = user_id.encode()
        message = len(owner).to_bytes(4, "big") + owner + payload
        return hmac.new(self.secret, message, hashlib.sha256).digest()[:MAC_BYTES]

    def encode(self, user_id: str, position: Position) -> str:
        document = [str(position.task_id), *(position.keys[key] for key in KEYS)]
        payload = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        raw = payload + self._mac(user_id, payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, user_id: str, cursor: str) -> Position:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise _invalid() from None
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if len(raw) <= MAC_BYTES or not hmac.compare_digest(mac, self._mac(user_id, payload)):
            raise _invalid()
        task_id, *values = json.loads(payload)
        return Position(task_id=uuid.UUID(task_id), keys=dict(zip(KEYS, values, strict=True)))
