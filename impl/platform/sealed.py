"""Sealed tokens: what the server hands a client to pass back unchanged (list cursors, sync tokens).

Sealed with AES-256-GCM: the client can neither read nor alter what is inside (a cursor carries a
task's title and dates, which must not end up in access logs, proxies and browser history), and
the user id is the associated data, so a token sealed for one user does not open for another.
Stateless: any replica with the same secret opens any replica's tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class Sealer:
    """Seals and opens the tokens of one purpose: the key is derived from the secret and the
    purpose, so a cursor can never be passed off as a sync token or the other way round."""

    def __init__(self, secret: bytes, purpose: str) -> None:
        key = hashlib.sha256(b"task-api sealed\0" + purpose.encode() + b"\0" + secret).digest()
        self._aead = AESGCM(key)

    def seal(self, user_id: str, payload: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, payload, user_id.encode())
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def open(self, user_id: str, token: str) -> bytes | None:
        """The payload, or None for a token that was not sealed here for this user (tampered,
        truncated, another user's or another purpose's)."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) <= NONCE_BYTES + 16:
            return None
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], user_id.encode())
        except InvalidTag:
            return None
