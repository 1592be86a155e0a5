"""JWT verification: HS256 with a shared secret, or asymmetric keys from a JWKS URL.

Algorithms are an allow-list per mode, and in JWKS mode also per key type, so `none` and
HS/RS confusion never pass. JWKS documents are fetched off the event loop, cached, and fetched
again when a token names an unknown `kid` (at most once per cooldown).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.request
import uuid
from typing import Any

import jwt

from impl.errors import Unauthorized
from impl.settings import Settings

log = logging.getLogger("task_api.auth")

HS_ALGORITHMS = ["HS256"]
# Better Auth's jwt plugin: EdDSA by default, also ES256, RS256, PS256.
ALGORITHMS_BY_KEY_TYPE = {"OKP": ["EdDSA"], "EC": ["ES256"], "RSA": ["RS256", "PS256"]}
MAX_TOKEN_BYTES = 8192
JWKS_TIMEOUT_SECONDS = 5.0
FAILED_FETCH_RETRY_SECONDS = 1.0
# Better Auth's user ids must be configured as UUIDs; accept only the canonical text form, so
# one user cannot appear under several spellings (urn:uuid:, braces, no dashes).
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.secret = settings.better_auth_secret
        self.jwks_url = settings.jwks_url
        self.issuer = settings.issuer
        self.audience = settings.audience
        self.leeway = settings.jwt_leeway_seconds
        self.cooldown = settings.jwks_refetch_cooldown_seconds
        self.max_age = settings.jwks_max_age_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")  # last successful fetch
        self._attempted_at = float("-inf")  # last attempt, successful or not
        self._lock = asyncio.Lock()

    @property
    def mode(self) -> str:
        return "jwks" if self.jwks_url else "hs256"

    async def start(self) -> None:
        """Fetch the JWKS once at start-up; a failure is logged and retried on first use."""
        if self.jwks_url:
            try:
                await self._refresh()
            except Exception as exc:  # noqa: BLE001 - start anyway, keys are fetched lazily
                log.warning("could not fetch JWKS from %s: %s", self.jwks_url, exc)

    async def verify(self, token: str) -> uuid.UUID:
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized()
        key, algorithms = await self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Token expired") from None
        except jwt.PyJWTError:
            raise Unauthorized() from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not CANONICAL_UUID.fullmatch(subject.lower()):
            raise Unauthorized()
        return uuid.UUID(subject)

    async def _key_for(self, token: str) -> tuple[Any, list[str]]:
        if not self.jwks_url:
            return self.secret, HS_ALGORITHMS
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized() from None
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthorized()
        stale = time.monotonic() - self._fetched_at > self.max_age
        if kid not in self._keys or stale:  # stale: keys removed upstream must stop working
            await self._refresh_for_unknown_kid()
        jwk = self._keys.get(kid)
        if jwk is None:
            raise Unauthorized()
        return jwk.key, ALGORITHMS_BY_KEY_TYPE.get(jwk.key_type or "", [])

    async def _refresh_for_unknown_kid(self) -> None:
        async with self._lock:
            # A failed fetch (e.g. Better Auth still starting) is retried after a second, not
            # after the full cooldown, which only protects the JWKS endpoint from a kid flood.
            failed = self._attempted_at > self._fetched_at
            wait = min(self.cooldown, FAILED_FETCH_RETRY_SECONDS) if failed else self.cooldown
            if time.monotonic() - self._attempted_at < wait:
                return
            try:
                await self._refresh()
            except Exception as exc:  # noqa: BLE001 - the token is then simply not verifiable
                log.warning("could not fetch JWKS from %s: %s", self.jwks_url, exc)

    async def _refresh(self) -> None:
        self._attempted_at = time.monotonic()
        document = await asyncio.to_thread(self._fetch_jwks)
        keys: dict[str, jwt.PyJWK] = {}
        for data in document.get("keys", []):
            if data.get("kty") not in ALGORITHMS_BY_KEY_TYPE or not data.get("kid"):
                continue
            try:
                keys[data["kid"]] = jwt.PyJWK(data)
            except jwt.PyJWTError as exc:
                log.warning("skipping JWKS key %s: %s", data.get("kid"), exc)
        self._keys = keys
        self._fetched_at = time.monotonic()
        log.info("loaded %d signing keys from %s", len(keys), self.jwks_url)

    def _fetch_jwks(self) -> dict[str, Any]:
        assert self.jwks_url
        request = urllib.request.Request(self.jwks_url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=JWKS_TIMEOUT_SECONDS) as response:
            document = json.loads(response.read(1_000_000))
        if not isinstance(document, dict):
            raise TypeError("JWKS document is not an object")
        return document


def mint_hs256(secret: str, user_id: uuid.UUID | str, ttl_seconds: int = 3600) -> str:
    """A token like the ones the seed's frontend sends, for local use and tests."""
    now = int(time.time())
    claims = {"sub": str(user_id), "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm="HS256")
