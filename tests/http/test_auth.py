"""Bearer-token authentication against a secured operation (GET /api/tasks), end to end.

Real JWTs (signed by PyJWT, or by hand where PyJWT refuses to build the attack), real uvicorn
servers over HTTP, and in JWKS mode a real JWKS document served over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from impl.platform import token_verifier as reasons
from tests.support.servers import SECRET, running_server, settings
from tests.support.servers import random_user_id as better_auth_id

TASKS = "/api/tasks"
JWKS_PATH = "/api/auth/jwks"
REQUIRED = "Authorization header required"
EXPIRED = "Token expired"
LEEWAY = 30  # Settings.jwt_leeway_seconds default
OTHER_SECRET = "another-secret-" + "y" * 40


# --- helpers -------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims(sub: str | None = "", ttl: int = 3600, **extra: Any) -> dict[str, Any]:
    """Claims of a valid token: sub="" means a fresh Better Auth style id, sub=None leaves sub
    out; an extra claim given as None is left out too."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub or better_auth_id(), "iat": now, "exp": now + ttl}
    if sub is None:
        del payload["sub"]
    payload.update(extra)
    return {name: value for name, value in payload.items() if value is not None}


def hs(payload: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=algorithm)


def hs256_by_hand(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """For tokens PyJWT refuses to build (non-string sub, a PEM public key as HMAC secret)."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(response: httpx.Response, message: str) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert set(body) == {"error", "meta"}
    assert body["error"] == {"code": "UNAUTHORIZED", "message": message}
    assert body["meta"]["request_id"] == response.headers["x-request-id"]
    assert body["meta"]["timestamp"]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="task-api"')
    if message == REQUIRED:  # RFC 6750 section 3.1: no error code when no credentials came
        assert "error=" not in challenge
    else:
        assert 'error="invalid_token"' in challenge
        assert f'error_description="{message}"' in challenge


def assert_empty_list(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] == []
    assert body["meta"]["total"] == 0
    assert "www-authenticate" not in response.headers


# --- HS256 mode: the session's default server ----------------------------------------------


async def test_valid_token_is_accepted_and_the_list_is_scoped(client: httpx.AsyncClient) -> None:
    owner = better_auth_id()
    created = await client.post(TASKS, json={"title": "mine"}, headers=bearer(hs(claims(owner))))
    assert created.status_code == 201, created.text
    assert created.json()["data"]["user_id"] == owner

    # A second, separately minted token for the same sub sees the task ...
    mine = await client.get(TASKS, headers=bearer(hs(claims(owner))))
    assert mine.status_code == 200, mine.text
    assert [task["title"] for task in mine.json()["data"]] == ["mine"]
    assert mine.json()["meta"]["total"] == 1
    # ... and a fresh user sees an empty list.
    assert_empty_list(await client.get(TASKS, headers=bearer(hs(claims()))))


async def test_no_authorization_header(client: httpx.AsyncClient) -> None:
    response = await client.get(TASKS)
    assert_unauthorized(response, REQUIRED)
    assert response.headers["www-authenticate"] == 'Bearer realm="task-api"'


@pytest.mark.parametrize(
    "header",
    ["Basic xxx", "Basic dXNlcjpwYXNz", "Bearer", "Token a.b.c", "Bearera.b.c", "a.b.c"],
)
async def test_not_a_bearer_credential(client: httpx.AsyncClient, header: str) -> None:
    assert_unauthorized(await client.get(TASKS, headers={"Authorization": header}), REQUIRED)


async def test_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await client.get(TASKS, headers={"Authorization": f"bEaReR {hs(claims())}"})
    assert_empty_list(response)


async def test_alg_none_built_by_hand(client: httpx.AsyncClient) -> None:
    token = f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(claims())}."
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.ALGORITHM_NOT_ALLOWED)


async def test_alg_none_built_by_pyjwt(client: httpx.AsyncClient) -> None:
    token = jwt.encode(claims(), None, algorithm="none")
    assert token.endswith(".")  # really unsigned
    assert jwt.get_unverified_header(token)["alg"] == "none"
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.ALGORITHM_NOT_ALLOWED)


async def test_alg_none_header_with_a_valid_signature_kept(client: httpx.AsyncClient) -> None:
    _, payload, signature = hs(claims()).split(".")
    token = f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}"
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.ALGORITHM_NOT_ALLOWED)


async def test_wrong_secret(client: httpx.AsyncClient) -> None:
    token = hs(claims(), secret=OTHER_SECRET)
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.BAD_SIGNATURE)


async def test_expired_beyond_the_leeway(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    token = hs(claims(iat=now - 3600, exp=now - LEEWAY - 60))
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), EXPIRED)


async def test_expired_and_forged_says_invalid_not_expired(client: httpx.AsyncClient) -> None:
    # The signature is checked before the claims: a forger learns nothing from the message.
    now = int(time.time())
    token = hs(claims(iat=now - 7200, exp=now - 3600), secret=OTHER_SECRET)
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.BAD_SIGNATURE)


async def test_expired_within_the_leeway_is_accepted(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    token = hs(claims(iat=now - 3600, exp=now - 10))
    assert_empty_list(await client.get(TASKS, headers=bearer(token)))


async def test_not_before_in_the_future(client: httpx.AsyncClient) -> None:
    token = hs(claims(nbf=int(time.time()) + 300))
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.NOT_YET_VALID)


async def test_missing_sub(client: httpx.AsyncClient) -> None:
    payload = claims(sub=None)
    assert "sub" not in payload
    assert_unauthorized(await client.get(TASKS, headers=bearer(hs(payload))), reasons.NO_SUBJECT)


async def test_missing_exp(client: httpx.AsyncClient) -> None:
    payload = claims()
    del payload["exp"]
    assert_unauthorized(await client.get(TASKS, headers=bearer(hs(payload))), reasons.NO_EXPIRY)


OPAQUE_IDS = [
    "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY",  # Better Auth's default: 32 random alphanumerics
    "0b7f3c3e-6c7d-4e43-9a55-1f0c2bd7f6a1",  # generateId: "uuid"
    "0B7F3C3E-6C7D-4E43-9A55-1F0C2BD7F6A1",  # the same UUID in capitals: another user id
    "1234",  # generateId: "serial"
    "user|auth0:42 with spaces",
    "ユーザー👩‍💻",
    "x",
    "z" * 255,
]


@pytest.mark.parametrize("sub", OPAQUE_IDS)
async def test_any_opaque_subject_is_a_user_id(client: httpx.AsyncClient, sub: str) -> None:
    """Each id owns its tasks: created, listed back and counted under exactly that id."""
    created = await client.post(TASKS, json={"title": "t"}, headers=bearer(hs(claims(sub))))
    assert created.status_code == 201, created.text
    assert created.json()["data"]["user_id"] == sub
    listed = await client.get(TASKS, headers=bearer(hs(claims(sub))))
    assert [task["id"] for task in listed.json()["data"]] == [created.json()["data"]["id"]]
    assert listed.json()["meta"]["total"] == 1
    stats = await client.get(f"{TASKS}/stats", headers=bearer(hs(claims(sub))))
    assert stats.json()["data"]["total"] == 1
    deleted = await client.delete(
        f"{TASKS}/{created.json()['data']['id']}", headers=bearer(hs(claims(sub)))
    )
    assert deleted.status_code == 204


async def test_subjects_differing_only_in_case_are_different_users(
    client: httpx.AsyncClient,
) -> None:
    lower = better_auth_id().lower()
    created = await client.post(TASKS, json={"title": "t"}, headers=bearer(hs(claims(lower))))
    task = f"{TASKS}/{created.json()['data']['id']}"
    other = await client.get(task, headers=bearer(hs(claims(lower.upper()))))
    assert other.status_code == 403, other.text


@pytest.mark.parametrize(
    ("sub", "reason"),
    [
        ("", reasons.NO_SUBJECT),
        ("z" * 256, reasons.SUBJECT_TOO_LONG),
        ("é" * 256, reasons.SUBJECT_TOO_LONG),  # characters, not bytes
        ("user\x00id", reasons.SUBJECT_CONTROL),
        ("user\nid", reasons.SUBJECT_CONTROL),
        ("\tuser", reasons.SUBJECT_CONTROL),
        ("user\x7f", reasons.SUBJECT_CONTROL),
        ("user\x85", reasons.SUBJECT_CONTROL),  # a C1 control
    ],
)
async def test_subject_that_is_not_a_user_id(
    client: httpx.AsyncClient, sub: str, reason: str
) -> None:
    token = hs({**claims(), "sub": sub})
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reason)


async def test_subject_with_a_lone_surrogate(client: httpx.AsyncClient) -> None:
    """JSON can spell a lone surrogate (\\ud800); it is not text PostgreSQL can store."""
    header = {"alg": "HS256", "typ": "JWT"}
    payload = json.dumps({**claims(), "sub": "user\ud800"}).encode()  # ensure_ascii: escaped
    assert b"\\ud800" in payload
    signing_input = f"{b64json(header)}.{b64url(payload)}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(signature)}"
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.SUBJECT_CONTROL)


@pytest.mark.parametrize(
    "extra",
    [
        {"iss": "https://app.example.com"},
        {"aud": "https://api.example.com"},
        {"iss": "https://app.example.com", "aud": ["https://api.example.com", "other"]},
    ],
)
async def test_hs256_with_issuer_or_audience_is_accepted_when_none_is_configured(
    client: httpx.AsyncClient, extra: dict[str, Any]
) -> None:
    """A Next.js route handler signing with jose usually sets iss and aud: with only
    BETTER_AUTH_SECRET configured, they are not the API's to judge."""
    assert_empty_list(await client.get(TASKS, headers=bearer(hs(claims(**extra)))))


async def test_issued_in_the_future(client: httpx.AsyncClient) -> None:
    token = hs(claims(iat=int(time.time()) + 600))
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.NOT_YET_VALID)


async def test_a_refusal_never_echoes_the_token(client: httpx.AsyncClient) -> None:
    token = hs(claims(), secret=OTHER_SECRET)
    response = await client.get(TASKS, headers=bearer(token))
    assert_unauthorized(response, reasons.BAD_SIGNATURE)
    for part in token.split("."):
        assert part not in response.text
        assert part not in str(response.headers)


@pytest.fixture(scope="module")
def hs256_issuer_api(base_url: str, database_url: str) -> Iterator[str]:
    """HS256 with an issuer and an audience configured: both enforced."""
    assert base_url
    app_settings = settings(
        database_url, jwt_issuer="https://app.example.com", jwt_audience="https://api.example.com"
    )
    with running_server(app_settings) as url:
        yield url


@pytest.mark.parametrize(
    ("iss", "aud", "reason"),
    [
        ("https://app.example.com", "https://api.example.com", None),
        ("https://app.example.com", ["x", "https://api.example.com"], None),
        ("https://evil.example", "https://api.example.com", reasons.WRONG_ISSUER),
        (None, "https://api.example.com", reasons.NO_ISSUER),
        ("https://app.example.com", "https://evil.example", reasons.WRONG_AUDIENCE),
        ("https://app.example.com", None, reasons.NO_AUDIENCE),
    ],
)
async def test_hs256_enforces_a_configured_issuer_and_audience(
    hs256_issuer_api: str, iss: str | None, aud: Any, reason: str | None
) -> None:
    token = hs(claims(iss=iss, aud=aud))
    async with httpx.AsyncClient(base_url=hs256_issuer_api, timeout=30) as http:
        response = await http.get(TASKS, headers=bearer(token))
    if reason is None:
        assert_empty_list(response)
    else:
        assert_unauthorized(response, reason)


@pytest.mark.parametrize("sub", [12345, ["0b7f3c3e-6c7d-4e43-9a55-1f0c2bd7f6a1"], {"id": 1}])
async def test_non_string_sub(client: httpx.AsyncClient, sub: Any) -> None:
    header = {"alg": "HS256", "typ": "JWT"}
    token = hs256_by_hand(header, {**claims(), "sub": sub}, SECRET.encode())
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.SUBJECT_NOT_TEXT)


def date_claim_values(claim: str) -> list[Any]:
    """What a date claim must not be (RFC 7519: a JSON number), each a value PyJWT alone would
    take (int() of it) or choke on: the claim's own valid number as a string, booleans, and
    the non-finite floats Python's json reads."""
    valid = claims()[claim if claim != "nbf" else "iat"]
    return [str(valid), True, False, float("nan"), float("inf"), float("-inf")]


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
async def test_a_date_claim_that_is_not_a_number(client: httpx.AsyncClient, claim: str) -> None:
    for value in date_claim_values(claim):
        token = hs(claims(**{claim: value}))
        response = await client.get(TASKS, headers=bearer(token))
        assert_unauthorized(response, f"Invalid token: {claim} is not a number")
    # The same claims as numbers pass (a fraction of a second too: a JSON number).
    assert_empty_list(await client.get(TASKS, headers=bearer(hs(claims(nbf=int(time.time()))))))
    now = time.time()
    assert_empty_list(await client.get(TASKS, headers=bearer(hs(claims(iat=now, exp=now + 60.5)))))


async def test_an_exponent_beyond_a_float_is_not_a_date(client: httpx.AsyncClient) -> None:
    """`1e999` is valid JSON that Python reads as infinity: refused, never a 500."""
    payload = f'{{"sub": "{better_auth_id()}", "iat": {int(time.time())}, "exp": 1e999}}'
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}.{b64url(payload.encode())}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(signature)}"
    response = await client.get(TASKS, headers=bearer(token))
    assert_unauthorized(response, "Invalid token: exp is not a number")


async def test_tampered_payload_with_the_original_signature(client: httpx.AsyncClient) -> None:
    valid = hs(claims())
    header, _, signature = valid.split(".")
    token = f"{header}.{b64json(claims())}.{signature}"  # another sub
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.BAD_SIGNATURE)
    # The untampered original passes, so it is the signature that rejects the forgery.
    assert_empty_list(await client.get(TASKS, headers=bearer(valid)))


@pytest.mark.parametrize(
    "token", ["abc.def", "abc.def.ghi", "abc", "...", "eyJhbGciOiJIUzI1NiJ9.e30", "a.b.c.d"]
)
async def test_garbage_token(client: httpx.AsyncClient, token: str) -> None:
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.MALFORMED)


async def test_oversized_token_is_rejected_even_when_validly_signed(
    client: httpx.AsyncClient,
) -> None:
    token = hs(claims(pad="x" * 9000))
    assert len(token) > 8192
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.MALFORMED)


async def test_large_token_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    token = hs(claims(pad="x" * 5800))
    assert 7000 < len(token) <= 8192
    assert_empty_list(await client.get(TASKS, headers=bearer(token)))


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
async def test_other_hmac_algorithms_are_not_allowed(
    client: httpx.AsyncClient, algorithm: str
) -> None:
    token = hs(claims(), algorithm=algorithm)
    # Verifiable with the right secret, so only the algorithm allow-list can reject it.
    assert jwt.decode(token, SECRET, algorithms=[algorithm])["sub"]
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.ALGORITHM_NOT_ALLOWED)


async def test_asymmetric_token_in_hs256_mode(client: httpx.AsyncClient) -> None:
    token = jwt.encode(claims(), ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA")
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.ALGORITHM_NOT_ALLOWED)


# --- JWKS mode: a second server, keys from a JWKS document over loopback HTTP ----------------


@dataclass
class SigningKey:
    kid: str
    private: Any

    @property
    def jwk(self) -> dict[str, Any]:
        """The public JWK, as Better Auth publishes it: kid, no "use"."""
        public = self.private.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        assert "d" not in jwk and "use" not in jwk
        return {**jwk, "kid": self.kid}

    def sign(self, payload: dict[str, Any], algorithm: str, kid: str | None = "") -> str:
        """kid="" is this key's kid; None leaves the kid out of the header."""
        headers = {"kid": kid or self.kid} if kid is not None else None
        return jwt.encode(payload, self.private, algorithm=algorithm, headers=headers)


@dataclass
class Keys:
    ed25519: SigningKey
    ec: SigningKey
    ec512: SigningKey
    rsa: SigningKey


class JwksDocument:
    """The served document; thread-safe, counts the fetches."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self._lock = threading.Lock()
        self._keys = list(keys)
        self._fetches = 0
        self.base_url = ""

    def add(self, jwk: dict[str, Any]) -> None:
        with self._lock:
            self._keys.append(jwk)

    def fetch(self) -> bytes:
        with self._lock:
            self._fetches += 1
            return json.dumps({"keys": self._keys}).encode()

    @property
    def fetches(self) -> int:
        with self._lock:
            return self._fetches


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        ed25519=SigningKey("ed-1", ed25519.Ed25519PrivateKey.generate()),
        ec=SigningKey("ec-1", ec.generate_private_key(ec.SECP256R1())),
        ec512=SigningKey("ec512-1", ec.generate_private_key(ec.SECP521R1())),
        rsa=SigningKey("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    )


@pytest.fixture(scope="module")
def jwks(keys: Keys) -> Iterator[JwksDocument]:
    document = JwksDocument([keys.ed25519.jwk, keys.ec.jwk, keys.ec512.jwk, keys.rsa.jwk])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != JWKS_PATH:
                self.send_error(404)
                return
            body = document.fetch()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: a free port, no race
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    document.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield document
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def jwks_api(base_url: str, database_url: str, jwks: JwksDocument) -> Iterator[str]:
    """A second real server, in JWKS mode, beside the default HS256 one (base_url)."""
    assert base_url
    app_settings = settings(
        database_url,
        better_auth_url=jwks.base_url,
        better_auth_secret=None,
        jwks_refetch_cooldown_seconds=0,
    )
    with running_server(app_settings) as url:
        yield url


@pytest.fixture
async def jwks_client(jwks_api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=jwks_api, timeout=30) as http:
        yield http


@pytest.fixture
def issued(jwks: JwksDocument) -> dict[str, Any]:
    """Valid claims for the JWKS server: iss and aud are BETTER_AUTH_URL."""
    return claims(iss=jwks.base_url, aud=jwks.base_url)


# Every key type Better Auth's jwt plugin offers (jwks.keyPairConfig.alg).
SIGNERS = [
    ("EdDSA", "ed25519"), ("ES256", "ec"), ("ES512", "ec512"), ("RS256", "rsa"), ("PS256", "rsa")
]


@pytest.mark.parametrize(("algorithm", "key"), SIGNERS)
async def test_jwks_each_better_auth_algorithm_is_accepted(
    jwks_client: httpx.AsyncClient,
    keys: Keys,
    jwks: JwksDocument,
    issued: dict[str, Any],
    algorithm: str,
    key: str,
) -> None:
    fetches = jwks.fetches
    token = getattr(keys, key).sign(issued, algorithm)
    assert_empty_list(await jwks_client.get(TASKS, headers=bearer(token)))
    assert jwks.fetches == fetches  # a known kid is served from the cache


async def test_jwks_document_was_fetched_at_start_up(jwks_api: str, jwks: JwksDocument) -> None:
    assert jwks.fetches >= 1


async def test_jwks_same_sub_across_keys_is_the_same_user(
    jwks_client: httpx.AsyncClient, keys: Keys, jwks: JwksDocument
) -> None:
    sub = better_auth_id()
    payload = claims(sub, iss=jwks.base_url, aud=jwks.base_url)
    created = await jwks_client.post(
        TASKS, json={"title": "via EdDSA"}, headers=bearer(keys.ed25519.sign(payload, "EdDSA"))
    )
    assert created.status_code == 201, created.text
    listed = await jwks_client.get(TASKS, headers=bearer(keys.rsa.sign(payload, "PS256")))
    assert listed.status_code == 200, listed.text
    assert [task["title"] for task in listed.json()["data"]] == ["via EdDSA"]


async def test_jwks_audience_list_containing_the_base_url_is_accepted(
    jwks_client: httpx.AsyncClient, keys: Keys, jwks: JwksDocument
) -> None:
    payload = claims(iss=jwks.base_url, aud=["https://other.example", jwks.base_url])
    token = keys.ed25519.sign(payload, "EdDSA")
    assert_empty_list(await jwks_client.get(TASKS, headers=bearer(token)))


@pytest.mark.parametrize("iss", ["https://evil.example", "trailing-slash", "missing"])
async def test_jwks_wrong_issuer(
    jwks_client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any], iss: str
) -> None:
    if iss == "missing":
        del issued["iss"]
    elif iss == "trailing-slash":
        issued["iss"] += "/"
    else:
        issued["iss"] = iss
    token = keys.ed25519.sign(issued, "EdDSA")
    reason = reasons.NO_ISSUER if iss == "missing" else reasons.WRONG_ISSUER
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), reason)


@pytest.mark.parametrize("aud", ["https://evil.example", ["https://evil.example"], "missing"])
async def test_jwks_wrong_audience(
    jwks_client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any], aud: Any
) -> None:
    if aud == "missing":
        del issued["aud"]
    else:
        issued["aud"] = aud
    token = keys.ec.sign(issued, "ES256")
    reason = reasons.NO_AUDIENCE if aud == "missing" else reasons.WRONG_AUDIENCE
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), reason)


async def test_jwks_missing_kid(
    jwks_client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any]
) -> None:
    token = keys.ed25519.sign(issued, "EdDSA", kid=None)
    assert "kid" not in jwt.get_unverified_header(token)
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), reasons.UNKNOWN_KEY)


async def test_jwks_unknown_kid_refetches_then_rejects(
    jwks_client: httpx.AsyncClient, keys: Keys, jwks: JwksDocument, issued: dict[str, Any]
) -> None:
    fetches = jwks.fetches
    token = keys.ed25519.sign(issued, "EdDSA", kid="no-such-kid")
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), reasons.UNKNOWN_KEY)
    assert jwks.fetches == fetches + 1  # cooldown 0: one refetch per unknown kid


@pytest.mark.parametrize("kid", [None, "ed-1", "rsa-1"])
async def test_jwks_hs256_with_the_shared_secret_is_rejected(
    jwks_client: httpx.AsyncClient, issued: dict[str, Any], kid: str | None
) -> None:
    headers = {"kid": kid} if kid else None
    token = jwt.encode(issued, SECRET, algorithm="HS256", headers=headers)
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), reasons.ALGORITHM_NOT_ALLOWED)


@pytest.mark.parametrize(
    "pem_format",
    [serialization.PublicFormat.SubjectPublicKeyInfo, serialization.PublicFormat.PKCS1],
)
async def test_jwks_key_confusion_hs256_keyed_with_the_rsa_public_key(
    jwks_client: httpx.AsyncClient,
    keys: Keys,
    issued: dict[str, Any],
    pem_format: serialization.PublicFormat,
) -> None:
    pem = keys.rsa.private.public_key().public_bytes(serialization.Encoding.PEM, pem_format)
    header = {"alg": "HS256", "typ": "JWT", "kid": keys.rsa.kid}
    token = hs256_by_hand(header, issued, pem)
    # The forgery is well-formed: a verifier that let the header pick HS256 would accept it.
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert b64url(expected) == signature
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), reasons.ALGORITHM_NOT_ALLOWED)


async def test_jwks_alg_none_with_a_published_kid(
    jwks_client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any]
) -> None:
    token = f"{b64json({'alg': 'none', 'typ': 'JWT', 'kid': keys.ed25519.kid})}.{b64json(issued)}."
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), reasons.ALGORITHM_NOT_ALLOWED)


async def test_jwks_algorithm_of_another_key_type(
    jwks_client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any]
) -> None:
    # Validly RS256-signed by the published RSA key, but naming the EC key's kid.
    token = keys.rsa.sign(issued, "RS256", kid=keys.ec.kid)
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), reasons.ALGORITHM_NOT_ALLOWED)


async def test_jwks_unpublished_key_claiming_a_published_kid(
    jwks_client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any]
) -> None:
    impostor = SigningKey(keys.ed25519.kid, ed25519.Ed25519PrivateKey.generate())
    token = impostor.sign(issued, "EdDSA")
    assert jwt.get_unverified_header(token)["kid"] == keys.ed25519.kid
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), reasons.BAD_SIGNATURE)


async def test_jwks_key_rotation_is_picked_up_by_a_refetch(
    jwks_client: httpx.AsyncClient, jwks: JwksDocument, issued: dict[str, Any]
) -> None:
    rotated = SigningKey(f"ed-rotated-{uuid.uuid4().hex[:8]}", ed25519.Ed25519PrivateKey.generate())
    token = rotated.sign(issued, "EdDSA")
    before = jwks.fetches
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), reasons.UNKNOWN_KEY)
    assert jwks.fetches == before + 1  # not published yet: refetched, still unknown

    jwks.add(rotated.jwk)
    assert_empty_list(await jwks_client.get(TASKS, headers=bearer(token)))
    assert jwks.fetches == before + 2  # the unknown kid triggered a fresh fetch
    # Cached from now on.
    assert_empty_list(await jwks_client.get(TASKS, headers=bearer(rotated.sign(issued, "EdDSA"))))
    assert jwks.fetches == before + 2


async def test_jwks_expired_beyond_the_leeway(
    jwks_client: httpx.AsyncClient, keys: Keys, jwks: JwksDocument
) -> None:
    now = int(time.time())
    payload = claims(iss=jwks.base_url, aud=jwks.base_url, iat=now - 3600, exp=now - LEEWAY - 60)
    token = keys.rsa.sign(payload, "RS256")
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), EXPIRED)


async def test_jwks_expired_within_the_leeway_is_accepted(
    jwks_client: httpx.AsyncClient, keys: Keys, jwks: JwksDocument
) -> None:
    now = int(time.time())
    payload = claims(iss=jwks.base_url, aud=jwks.base_url, iat=now - 3600, exp=now - 10)
    token = keys.ec.sign(payload, "ES256")
    assert_empty_list(await jwks_client.get(TASKS, headers=bearer(token)))


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
async def test_jwks_a_date_claim_that_is_not_a_number(
    jwks_client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any], claim: str
) -> None:
    for value in date_claim_values(claim):
        token = keys.ed25519.sign({**issued, claim: value}, "EdDSA")
        response = await jwks_client.get(TASKS, headers=bearer(token))
        assert_unauthorized(response, f"Invalid token: {claim} is not a number")
    # Signature first: a forged token with a string date is refused for its signature.
    forged = SigningKey("ed-1", ed25519.Ed25519PrivateKey.generate())
    token = forged.sign({**issued, claim: "1"}, "EdDSA")
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), reasons.BAD_SIGNATURE)


async def test_jwks_better_auth_default_id(
    jwks_client: httpx.AsyncClient, keys: Keys, jwks: JwksDocument
) -> None:
    sub = better_auth_id()
    payload = claims(sub, iss=jwks.base_url, aud=jwks.base_url)
    token = keys.ed25519.sign(payload, "EdDSA")
    created = await jwks_client.post(TASKS, json={"title": "t"}, headers=bearer(token))
    assert created.status_code == 201, created.text
    assert created.json()["data"]["user_id"] == sub


async def test_default_server_still_works_alongside_the_jwks_server(
    jwks_api: str, client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any]
) -> None:
    # A token that the JWKS server accepts means nothing to the HS256 server ...
    token = keys.ed25519.sign(issued, "EdDSA")
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), reasons.ALGORITHM_NOT_ALLOWED)
    # ... which keeps serving its own users, with its own database pool.
    assert_empty_list(await client.get(TASKS, headers=bearer(hs(claims()))))


@pytest.mark.parametrize(("algorithm", "key"), [("ES256", "ec512"), ("ES512", "ec")])
async def test_jwks_ec_curve_and_algorithm_must_match(
    jwks_client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any], algorithm: str, key: str
) -> None:
    """A P-521 key verifies ES512 only, a P-256 key ES256 only, whatever the header says."""
    signer = getattr(keys, key)
    other = keys.ec if key == "ec512" else keys.ec512
    token = jwt.encode(issued, other.private, algorithm=algorithm, headers={"kid": signer.kid})
    assert_unauthorized(
        await jwks_client.get(TASKS, headers=bearer(token)), reasons.ALGORITHM_NOT_ALLOWED
    )


@pytest.mark.parametrize("alg", ["PS256", "RS256"])
async def test_jwks_key_that_names_its_algorithm_verifies_only_that_one(
    jwks_client: httpx.AsyncClient, jwks: JwksDocument, issued: dict[str, Any], alg: str
) -> None:
    """Better Auth's RSA keys carry their `alg`: an RS256 key does not verify PS256 tokens."""
    signer = SigningKey(f"rsa-{alg}-{uuid.uuid4().hex[:8]}", rsa.generate_private_key(65537, 2048))
    jwks.add({**signer.jwk, "alg": alg})
    assert_empty_list(await jwks_client.get(TASKS, headers=bearer(signer.sign(issued, alg))))
    other = "RS256" if alg == "PS256" else "PS256"
    assert_unauthorized(
        await jwks_client.get(TASKS, headers=bearer(signer.sign(issued, other))),
        reasons.ALGORITHM_NOT_ALLOWED,
    )


# --- JWKS with the default refetch settings: rotation, a kid flood ---------------------------


@pytest.fixture(scope="module")
def default_jwks_api(base_url: str, database_url: str, jwks: JwksDocument) -> Iterator[str]:
    """JWKS mode as users run it: the default minimum interval between refetches."""
    assert base_url
    app_settings = settings(database_url, better_auth_url=jwks.base_url, better_auth_secret=None)
    assert app_settings.jwks_refetch_cooldown_seconds > 0
    with running_server(app_settings) as url:
        yield url


async def test_rotated_key_is_accepted_on_its_first_request(
    default_jwks_api: str, jwks: JwksDocument, issued: dict[str, Any]
) -> None:
    interval = settings("postgresql://unused").jwks_refetch_cooldown_seconds
    await asyncio.sleep(interval)  # a server up for a while: its last fetch is not recent
    async with httpx.AsyncClient(base_url=default_jwks_api, timeout=30) as http:
        # Twice in a row: the second rotation comes within the minimum interval of the first
        # refetch, so it waits for the next allowed one (at most the interval), then passes.
        for _ in range(2):
            rotated = SigningKey(
                f"ed-rotated-{uuid.uuid4().hex[:8]}", ed25519.Ed25519PrivateKey.generate()
            )
            jwks.add(rotated.jwk)  # Better Auth publishes the new key as it signs with it
            started = time.perf_counter()
            response = await http.get(TASKS, headers=bearer(rotated.sign(issued, "EdDSA")))
            elapsed = time.perf_counter() - started
            assert_empty_list(response)
            assert elapsed < interval + 5
            print(f"rotation: first token of the new key accepted in {elapsed * 1000:.0f} ms")


async def test_random_kids_cannot_flood_the_auth_server(
    default_jwks_api: str, jwks: JwksDocument, keys: Keys, issued: dict[str, Any]
) -> None:
    """Refetches for unknown kids are coalesced and spaced by the minimum interval: 3 bursts of
    40 concurrent requests with random kids cost at most 2 fetches per interval elapsed."""
    interval = settings("postgresql://unused").jwks_refetch_cooldown_seconds
    async with httpx.AsyncClient(base_url=default_jwks_api, timeout=30) as http:
        before, started = jwks.fetches, time.monotonic()
        for _ in range(3):
            tokens = [
                keys.ed25519.sign(issued, "EdDSA", kid=f"random-{uuid.uuid4().hex}")
                for _ in range(40)
            ]
            responses = await asyncio.gather(
                *(http.get(TASKS, headers=bearer(token)) for token in tokens)
            )
            for response in responses:
                assert_unauthorized(response, reasons.UNKNOWN_KEY)
        elapsed = time.monotonic() - started
        fetched = jwks.fetches - before
        print(f"kid flood: 120 requests in {elapsed:.1f} s caused {fetched} JWKS fetches")
        assert 1 <= fetched <= 2 * (elapsed / interval + 1)
        # Known keys were never held up by the flood.
        assert_empty_list(await http.get(TASKS, headers=bearer(keys.rsa.sign(issued, "RS256"))))


# --- Both key sources at once, and a JWKS that cannot be fetched ------------------------------


async def test_secret_and_jwks_together_accept_both_kinds_of_token(
    base_url: str, database_url: str, jwks: JwksDocument, keys: Keys, issued: dict[str, Any]
) -> None:
    """BETTER_AUTH_SECRET and BETTER_AUTH_URL both set (as in a Better Auth app's own .env):
    HS256 tokens against the secret, the jwt plugin's against the JWKS; iss and aud enforced on
    both."""
    assert base_url
    app_settings = settings(database_url, better_auth_url=jwks.base_url)
    with running_server(app_settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            assert_empty_list(await http.get(TASKS, headers=bearer(hs(issued))))
            assert_empty_list(
                await http.get(TASKS, headers=bearer(keys.ed25519.sign(issued, "EdDSA")))
            )
            assert_unauthorized(
                await http.get(TASKS, headers=bearer(hs(claims()))), reasons.NO_ISSUER
            )
            forged = hs(issued, secret=OTHER_SECRET)
            assert_unauthorized(
                await http.get(TASKS, headers=bearer(forged)), reasons.BAD_SIGNATURE
            )


async def test_jwks_unreachable_with_no_key_is_503_not_401(
    base_url: str, database_url: str, keys: Keys
) -> None:
    """Better Auth down and no key ever fetched: the auth server's problem, not the token's (a
    401 would make a frontend sign its user out)."""
    assert base_url
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
        app_settings = settings(database_url, better_auth_url=nowhere, better_auth_secret=None)
        with running_server(app_settings) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                token = keys.ed25519.sign(claims(iss=nowhere, aud=nowhere), "EdDSA")
                response = await http.get(TASKS, headers=bearer(token))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert response.headers["retry-after"]
