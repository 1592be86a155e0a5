"""Sealed tokens: opaque, tamper-proof, bound to their user and their purpose."""

from __future__ import annotations

import base64

from impl.platform.sealed import Sealer

SECRET = b"s" * 32


def test_a_sealed_token_opens_for_its_user_and_hides_its_payload() -> None:
    sealer = Sealer(SECRET, "cursor")
    token = sealer.seal("alice", b'["Buy groceries","2026-11-30"]')
    assert sealer.open("alice", token) == b'["Buy groceries","2026-11-30"]'
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"groceries" not in raw and "groceries" not in token
    assert token != sealer.seal("alice", b'["Buy groceries","2026-11-30"]')  # fresh nonce


def test_another_user_another_purpose_or_a_changed_byte_does_not_open() -> None:
    sealer = Sealer(SECRET, "cursor")
    token = sealer.seal("alice", b"payload")
    assert sealer.open("bob", token) is None
    assert Sealer(SECRET, "sync").open("alice", token) is None
    assert Sealer(b"t" * 32, "cursor").open("alice", token) is None
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    assert sealer.open("alice", flipped) is None
    for garbage in ("", "!!!", "abc", token[:20]):
        assert sealer.open("alice", garbage) is None
