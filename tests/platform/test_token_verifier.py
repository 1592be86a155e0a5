"""The token verifier remembers the tokens that passed (impl/platform/token_verifier.py): a
remembered token must still stop working when a full check would refuse it, when it expires and
when its key is gone. (The HTTP behaviour of every refusal: tests/http/test_auth.py.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from impl.platform import token_verifier as reasons
from impl.platform.settings import Settings
from impl.platform.token_verifier import TokenRefused, TokenVerifier

SECRET = "token-verifier-test-secret-" + "x" * 40
USER = "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY"


def verifier(**overrides: Any) -> TokenVerifier:
    values: dict[str, Any] = {"database_url": "postgresql://localhost/unused",
                              "better_auth_secret": SECRET, "jwt_leeway_seconds": 0}
    values.update(overrides)
    return TokenVerifier(Settings(_env_file=None, **values))  # type: ignore[call-arg]


async def refused(check: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenRefused) as refusal:
        await check.verify(token)
    return refusal.value.reason


async def test_a_remembered_token_still_expires() -> None:
    check = verifier()
    expires = int(time.time()) + 2
    token = jwt.encode({"sub": USER, "exp": expires}, SECRET, algorithm="HS256")
    assert await check.verify(token) == USER
    assert await check.verify(token) == USER  # remembered
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.1)
    assert await refused(check, token) == reasons.EXPIRED


async def test_a_remembered_token_is_not_taken_with_another_key() -> None:
    check = verifier()
    token = jwt.encode({"sub": USER, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    assert await check.verify(token) == USER
    check.secret = "another-secret-" + "y" * 40  # as if the key had changed
    assert await refused(check, token) == reasons.BAD_SIGNATURE


async def test_a_remembered_token_stops_working_when_its_key_leaves_the_jwks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check = verifier(better_auth_secret=None, jwt_jwks_url="http://127.0.0.1:9/jwks",
                     jwks_max_age_seconds=0.2, jwks_refetch_cooldown_seconds=0)
    private = ed25519.Ed25519PrivateKey.generate()
    published = {**OKPAlgorithm.to_jwk(private.public_key(), as_dict=True), "kid": "ed-1"}
    document: dict[str, Any] = {"keys": [published]}
    monkeypatch.setattr(check, "_fetch_jwks", lambda: document)
    token = jwt.encode({"sub": USER, "exp": int(time.time()) + 600}, private,
                       algorithm="EdDSA", headers={"kid": "ed-1"})
    assert await check.verify(token) == USER
    assert await check.verify(token) == USER  # remembered
    document["keys"] = []  # removed upstream; the next fetch, after the max age, sees it
    await asyncio.sleep(0.3)
    assert await refused(check, token) == reasons.UNKNOWN_KEY
