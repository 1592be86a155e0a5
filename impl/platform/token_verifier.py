"""JWT verification: HS256 with a shared secret, asymmetric keys from a JWKS URL, or both.

The token's `alg` header picks the key source, never the other way round: HS256 is checked only
against the shared secret, the asymmetric algorithms only against JWKS keys of their own type
(Better Auth's jwt plugin: EdDSA, ES256, ES512, RS256, PS256). So `none`, HS-with-a-public-key
and algorithm confusion never pass, and PyJWT is always called with exactly one algorithm.

JWKS documents are fetched off the event loop and cached. A token naming a `kid` the cache does
not hold triggers a refetch at once, so a key Better Auth has just rotated in is accepted on its
first request; concurrent refetches are coalesced into one and spaced by a minimum interval, so
random `kid`s cannot make the API hammer the auth server.

Every refusal says why (TokenRefused.reason), never echoing the token.

A client sends the same token with every request for its lifetime, and checking its signature
and claims is the largest single cost of a request's Python (about 45 us for HS256, 160 for
EdDSA).
A token that passed is remembered (its exact text, the key object it was checked with and the
window of time in which its claims hold); the same text with the same key inside that window
passes again without a second check. Anything else (another key, a rotated JWKS, a time outside
the window, an unknown token) goes through the full check, which refuses it with its reason.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
import types
import urllib.request
from dataclasses import dataclass
from typing import Any

import jwt

from impl.platform import user_ids
from impl.platform.errors import Unauthenticated, Unavailable
from impl.platform.settings import Settings

log = logging.getLogger("task_api.auth")

HS_ALGORITHM = "HS256"
# What each key type of Better Auth's jwt plugin may sign with: (kty, crv) -> algorithms.
ALGORITHMS_BY_KEY = {
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-521"): frozenset({"ES512"}),
    ("RSA", None): frozenset({"RS256", "PS256"}),
}
ASYMMETRIC_ALGORITHMS = frozenset().union(*ALGORITHMS_BY_KEY.values())
# RFC 9864 names the Ed25519 algorithm "Ed25519"; JOSE libraries still sign with "EdDSA".
ALGORITHM_ALIASES = {"Ed25519": "EdDSA"}
MAX_TOKEN_BYTES = 8192
JWKS_TIMEOUT_SECONDS = 5.0

# The reasons a token is refused: the 401 message and RFC 6750 error_description (the contract
# lists them; keep both in step).
EXPIRED = "Token expired"
NOT_YET_VALID = "Token not yet valid"
MALFORMED = "Invalid token: malformed"
BAD_SIGNATURE = "Invalid token: bad signature"
UNKNOWN_KEY = "Invalid token: unknown signing key"
ALGORITHM_NOT_ALLOWED = "Invalid token: algorithm not allowed"
WRONG_ISSUER = "Invalid token: wrong issuer"
WRONG_AUDIENCE = "Invalid token: wrong audience"
NO_ISSUER = "Invalid token: no issuer"
NO_AUDIENCE = "Invalid token: no audience"
NO_EXPIRY = "Invalid token: no expiry"
NO_SUBJECT = "Invalid token: no subject"
SUBJECT_NOT_TEXT = f"Invalid token: subject is {user_ids.NOT_TEXT}"
SUBJECT_TOO_LONG = f"Invalid token: subject {user_ids.TOO_LONG}"
SUBJECT_CONTROL = f"Invalid token: subject {user_ids.CONTROL}"
_SUBJECT_PROBLEM = {
    user_ids.EMPTY: NO_SUBJECT,
    user_ids.NOT_TEXT: SUBJECT_NOT_TEXT,
    user_ids.TOO_LONG: SUBJECT_TOO_LONG,
    user_ids.CONTROL: SUBJECT_CONTROL,
}
INVALID = "Invalid token"
# Tokens remembered as verified (bounded: an entry is at most MAX_TOKEN_BYTES of text).
VERIFIED_CACHE_SIZE = 1024

_MISSING_CLAIM = {"sub": NO_SUBJECT, "exp": NO_EXPIRY, "iss": NO_ISSUER, "aud": NO_AUDIENCE}
# RFC 7519 section 2 and 4.1.4-4.1.6: the date claims are NumericDates, JSON numbers. PyJWT
# takes whatever int() takes ("1796000000", true), so they are checked before it sees them.
DATE_CLAIMS = ("exp", "nbf", "iat")


def date_not_a_number(claim: str) -> str:
    return f"Invalid token: {claim} is not a number"


class DateClaimNotANumber(jwt.DecodeError):
    def __init__(self, claim: str) -> None:
        super().__init__(date_not_a_number(claim))
        self.claim = claim


def _is_numeric_date(value: object) -> bool:
    # bool is an int in Python, a JSON literal of its own in the token; Python's json reads
    # NaN, Infinity and 1e999 (infinite) as floats, none of them a date.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


class _StrictDates(jwt.PyJWT):
    """PyJWT whose payload, once its signature has been checked, must carry each date claim it
    has as a finite JSON number (`_decode_payload` is PyJWT's documented hook for this)."""

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        payload = super()._decode_payload(decoded)
        for claim in DATE_CLAIMS:
            if claim in payload and not _is_numeric_date(payload[claim]):
                raise DateClaimNotANumber(claim)
        return payload


_JWT = _StrictDates()


class TokenRefused(Unauthenticated):
    """A token that was presented but not accepted (a 401); `reason` is its message."""

    @property
    def reason(self) -> str:
        return self.message


@functools.lru_cache(maxsize=256)
def _unverified_header(token: str) -> dict[str, Any]:
    """The header of a token, not verified: a pure function of the token's text, so a client
    sending the same token again (for its 15 minutes) gets the header parsed once. (The read-only
    mapping keeps a cached header from being changed by a caller.)"""
    return types.MappingProxyType(jwt.get_unverified_header(token))  # type: ignore[return-value]


def _allowed_algorithms(data: dict[str, Any]) -> frozenset[str]:
    kty = data.get("kty")
    crv = None if kty == "RSA" else data.get("crv")
    allowed = ALGORITHMS_BY_KEY.get((kty, crv), frozenset())  # type: ignore[arg-type]
    alg = data.get("alg")
    if isinstance(alg, str):  # a key that names its algorithm is used with that one only
        allowed = allowed & {ALGORITHM_ALIASES.get(alg, alg)}
    return allowed


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token that passed every check: its user id, the key that verified it, and the span of
    its time claims (iat, nbf: not before; exp: until), which PyJWT checks against the clock."""

    subject: str
    key: Any
    not_before: float
    expires: float

    def holds(self, key: Any, now: float, leeway: float) -> bool:
        # PyJWT's own comparisons (jwt/api_jwt.py: _validate_iat, _validate_nbf, _validate_exp).
        return key is self.key and self.not_before <= now + leeway and self.expires > now - leeway


def _verified(subject: str, key: Any, claims: dict[str, Any]) -> _Verified:
    # The claims passed PyJWT's checks, so each present time claim is a number int() takes.
    starts = [int(claims[name]) for name in ("iat", "nbf") if name in claims]
    return _Verified(subject, key, max(starts, default=float("-inf")), int(claims["exp"]))


@dataclass(frozen=True, slots=True)
class _Key:
    key: Any  # the public key object PyJWT verifies with
    algorithms: frozenset[str]


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.secret = settings.better_auth_secret
        self.jwks_url = settings.jwks_url
        self.issuer = settings.issuer
        self.audience = settings.audience
        self.leeway = settings.jwt_leeway_seconds
        self.min_refetch_interval = settings.jwks_refetch_cooldown_seconds
        self.max_age = settings.jwks_max_age_seconds
        self._keys: dict[str, _Key] = {}
        self._fetched_at = float("-inf")  # last successful fetch
        self._attempted_at = float("-inf")  # start of the last attempt, successful or not
        self._refresh: asyncio.Task[None] | None = None
        self._verified: dict[str, _Verified] = {}  # token text -> what its check found
        self._options: dict[str, Any] = {
            "require": ["sub", "exp"],
            # With no audience configured, an `aud` the token carries is not ours to judge (a
            # Next.js route handler minting HS256 tokens usually sets one).
            "verify_aud": self.audience is not None,
        }

    async def start(self) -> None:
        """Fetch the JWKS once at start-up; a failure is logged and retried on first use."""
        if self.jwks_url:
            await self._shared_refresh()

    async def verify(self, token: str) -> str:
        """The user id (the token's `sub`) of a valid token; TokenRefused saying why if not."""
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRefused(MALFORMED)
        try:
            header = _unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused(MALFORMED) from None
        algorithm = header.get("alg")
        if algorithm == HS_ALGORITHM and self.secret:
            key: Any = self.secret
        elif algorithm in ASYMMETRIC_ALGORITHMS and self.jwks_url:
            found = await self._key_for(header.get("kid"))
            if algorithm not in found.algorithms:
                raise TokenRefused(ALGORITHM_NOT_ALLOWED)
            key = found.key
        else:
            raise TokenRefused(ALGORITHM_NOT_ALLOWED)
        known = self._verified.get(token)
        # PyJWT reads the same clock (datetime.now(UTC).timestamp()).
        if known is not None and known.holds(key, time.time(), self.leeway):
            return known.subject
        claims = self._decode(token, key, algorithm)
        subject = claims.get("sub")
        problem = user_ids.problem(subject)
        if problem:
            raise TokenRefused(_SUBJECT_PROBLEM[problem])
        assert isinstance(subject, str)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))  # the oldest entry
        self._verified[token] = _verified(subject, key, claims)
        return subject

    def expires_at(self, token: str) -> float:
        """When a token that verify() just accepted expires (its `exp`, Unix seconds, plus the
        leeway verify() allows): a long-lived response it opened (an event stream) ends then.
        Infinity for a token verify() has not accepted."""
        known = self._verified.get(token)
        return known.expires + self.leeway if known is not None else float("inf")

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = _JWT.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options=self._options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused(EXPIRED) from None
        except jwt.ImmatureSignatureError:
            raise TokenRefused(NOT_YET_VALID) from None
        except jwt.InvalidSignatureError:
            raise TokenRefused(BAD_SIGNATURE) from None
        except jwt.InvalidAlgorithmError:
            raise TokenRefused(ALGORITHM_NOT_ALLOWED) from None
        except jwt.InvalidAudienceError:
            raise TokenRefused(WRONG_AUDIENCE) from None
        except jwt.InvalidIssuerError:
            raise TokenRefused(WRONG_ISSUER) from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRefused(_MISSING_CLAIM.get(exc.claim, INVALID)) from None
        except DateClaimNotANumber as exc:
            raise TokenRefused(date_not_a_number(exc.claim)) from None
        except jwt.exceptions.InvalidSubjectError:
            raise TokenRefused(SUBJECT_NOT_TEXT) from None
        except (jwt.DecodeError, jwt.InvalidIssuedAtError):
            raise TokenRefused(MALFORMED) from None
        except jwt.PyJWTError:
            raise TokenRefused(INVALID) from None
        return claims

    async def _key_for(self, kid: object) -> _Key:
        if not isinstance(kid, str) or not kid:
            raise TokenRefused(UNKNOWN_KEY)
        arrived = time.monotonic()
        if arrived - self._fetched_at > self.max_age:  # keys removed upstream stop working
            await self._shared_refresh()
        # An unknown kid: refetch, unless a fetch that started after this request arrived
        # already came back without it. A fetch already under way when the request arrived may
        # predate the key, so then one more (spaced) fetch is waited for: at most two.
        while kid not in self._keys and self._attempted_at < arrived:
            await self._shared_refresh()
        found = self._keys.get(kid)
        if found is None:
            if self._fetched_at < self._attempted_at and not self._keys:
                # The JWKS could not be fetched and no key is known: the auth server's problem,
                # not the token's. A 401 would make a frontend sign its user out.
                raise Unavailable("Token signing keys unavailable")
            raise TokenRefused(UNKNOWN_KEY)
        return found

    async def _shared_refresh(self) -> None:
        """Join the refetch under way, or start one no sooner than the minimum interval after
        the last: one request to the auth server however many requests are waiting."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._spaced_refresh())
        await asyncio.shield(self._refresh)

    async def _spaced_refresh(self) -> None:
        wait = self._attempted_at + self.min_refetch_interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._attempted_at = time.monotonic()
        try:
            document = await asyncio.to_thread(self._fetch_jwks)
        except Exception as exc:  # noqa: BLE001 - tokens are then refused or answered 503
            log.warning("could not fetch JWKS from %s: %s", self.jwks_url, exc)
            return
        keys: dict[str, _Key] = {}
        for data in document.get("keys", []):
            kid = data.get("kid") if isinstance(data, dict) else None
            if not isinstance(kid, str) or not kid:
                continue  # no kid to find it by
            algorithms = _allowed_algorithms(data)
            if not algorithms:
                continue  # not a key type Better Auth signs with
            try:
                keys[kid] = _Key(jwt.PyJWK(data, min(algorithms)).key, algorithms)
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                log.warning("skipping JWKS key %s: %s", kid, exc)
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


def mint_hs256(secret: str, user_id: str, ttl_seconds: int = 3600) -> str:
    """A token like the ones a Next.js route handler signs with the shared secret, for local use
    and tests."""
    now = int(time.time())
    claims = {"sub": str(user_id), "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=HS_ALGORITHM)
