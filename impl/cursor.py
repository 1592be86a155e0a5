"""Opaque, signed keyset cursors. A cursor only works for the user, the filters and the sort it
was issued for: anything else, or a tampered one, is a 422."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass

from impl.errors import ValidationFailed

MAC_BYTES = 16


@dataclass(frozen=True)
class Position:
    sort_key: str  # the sort expression of the last row, as PostgreSQL prints it
    task_id: uuid.UUID


def _invalid() -> ValidationFailed:
    return ValidationFailed.field(
        "query.cursor",
        "Invalid cursor: use meta.next_cursor with the same filters and sort",
        "cursor_invalid",
    )


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _mac(self, user_id: uuid.UUID, scope: str, payload: bytes) -> bytes:
        message = user_id.bytes + scope.encode() + b"\0" + payload
        return hmac.new(self.secret, message, hashlib.sha256).digest()[:MAC_BYTES]

    def encode(self, user_id: uuid.UUID, scope: str, position: Position) -> str:
        payload = json.dumps([position.sort_key, str(position.task_id)]).encode()
        raw = payload + self._mac(user_id, scope, payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, user_id: uuid.UUID, scope: str, cursor: str) -> Position:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise _invalid() from None
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if len(raw) <= MAC_BYTES or not hmac.compare_digest(mac, self._mac(user_id, scope, payload)):
            raise _invalid()
        sort_key, task_id = json.loads(payload)
        return Position(sort_key=sort_key, task_id=uuid.UUID(task_id))
