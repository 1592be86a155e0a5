"""Bearer-token authentication against a secured operation (GET /api/tasks), end to end.

Real JWTs (signed by PyJWT, or by hand where PyJWT refuses to build the attack), real uvicorn
servers over HTTP, and in JWKS mode a real JWKS document served over loopback HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
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

from tests.servers import SECRET, running_server, settings

TASKS = "/api/tasks"
JWKS_PATH = "/api/auth/jwks"
REQUIRED = "Authorization header required"
INVALID = "Invalid token"
EXPIRED = "Token expired"
LEEWAY = 30  # Settings.jwt_leeway_seconds default
OTHER_SECRET = "another-secret-" + "y" * 40


# --- helpers -------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims(sub: str | None = "", ttl: int = 3600, **extra: Any) -> dict[str, Any]:
    """Claims of a valid token: sub="" means a fresh random UUID, sub=None leaves sub out;
    an extra claim given as None is left out too."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub or str(uuid.uuid4()), "iat": now, "exp": now + ttl}
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
    owner = str(uuid.uuid4())
    created = await client.post(TASKS, json={"title": "mine"}, headers=bearer(hs(claims(owner))))
    assert created.status_code == 201, created.text

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
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), INVALID)


async def test_alg_none_built_by_pyjwt(client: httpx.AsyncClient) -> None:
    token = jwt.encode(claims(), None, algorithm="none")
    assert token.endswith(".")  # really unsigned
    assert jwt.get_unverified_header(token)["alg"] == "none"
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), INVALID)


async def test_alg_none_header_with_a_valid_signature_kept(client: httpx.AsyncClient) -> None:
    _, payload, signature = hs(claims()).split(".")
    token = f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}"
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), INVALID)


async def test_wrong_secret(client: httpx.AsyncClient) -> None:
    token = hs(claims(), secret=OTHER_SECRET)
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), INVALID)


async def test_expired_beyond_the_leeway(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    token = hs(claims(iat=now - 3600, exp=now - LEEWAY - 60))
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), EXPIRED)


async def test_expired_and_forged_says_invalid_not_expired(client: httpx.AsyncClient) -> None:
    # The signature is checked before the claims: a forger learns nothing from the message.
    now = int(time.time())
    token = hs(claims(iat=now - 7200, exp=now - 3600), secret=OTHER_SECRET)
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), INVALID)


async def test_expired_within_the_leeway_is_accepted(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    token = hs(claims(iat=now - 3600, exp=now - 10))
    assert_empty_list(await client.get(TASKS, headers=bearer(token)))


async def test_not_before_in_the_future(client: httpx.AsyncClient) -> None:
    token = hs(claims(nbf=int(time.time()) + 300))
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), INVALID)


async def test_missing_sub(client: httpx.AsyncClient) -> None:
    payload = claims(sub=None)
    assert "sub" not in payload
    assert_unauthorized(await client.get(TASKS, headers=bearer(hs(payload))), INVALID)


async def test_missing_exp(client: httpx.AsyncClient) -> None:
    payload = claims()
    del payload["exp"]
    assert_unauthorized(await client.get(TASKS, headers=bearer(hs(payload))), INVALID)


@pytest.mark.parametrize("sub", ["user-123", "1234", "0123456789abcdef0123456789abcdeg", " "])
async def test_non_uuid_sub(client: httpx.AsyncClient, sub: str) -> None:
    assert_unauthorized(await client.get(TASKS, headers=bearer(hs(claims(sub)))), INVALID)


@pytest.mark.parametrize("sub", [12345, ["0b7f3c3e-6c7d-4e43-9a55-1f0c2bd7f6a1"], {"id": 1}])
async def test_non_string_sub(client: httpx.AsyncClient, sub: Any) -> None:
    header = {"alg": "HS256", "typ": "JWT"}
    token = hs256_by_hand(header, {**claims(), "sub": sub}, SECRET.encode())
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), INVALID)


async def test_tampered_payload_with_the_original_signature(client: httpx.AsyncClient) -> None:
    valid = hs(claims())
    header, _, signature = valid.split(".")
    token = f"{header}.{b64json(claims())}.{signature}"  # another sub
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), INVALID)
    # The untampered original passes, so it is the signature that rejects the forgery.
    assert_empty_list(await client.get(TASKS, headers=bearer(valid)))


@pytest.mark.parametrize(
    "token", ["abc.def", "abc.def.ghi", "abc", "...", "eyJhbGciOiJIUzI1NiJ9.e30", "a.b.c.d"]
)
async def test_garbage_token(client: httpx.AsyncClient, token: str) -> None:
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), INVALID)


async def test_oversized_token_is_rejected_even_when_validly_signed(
    client: httpx.AsyncClient,
) -> None:
    token = hs(claims(pad="x" * 9000))
    assert len(token) > 8192
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), INVALID)


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
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), INVALID)


async def test_asymmetric_token_in_hs256_mode(client: httpx.AsyncClient) -> None:
    token = jwt.encode(claims(), ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA")
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), INVALID)


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
        rsa=SigningKey("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    )


@pytest.fixture(scope="module")
def jwks(keys: Keys) -> Iterator[JwksDocument]:
    document = JwksDocument([keys.ed25519.jwk, keys.ec.jwk, keys.rsa.jwk])

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


SIGNERS = [("EdDSA", "ed25519"), ("ES256", "ec"), ("RS256", "rsa"), ("PS256", "rsa")]


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
    sub = str(uuid.uuid4())
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
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), INVALID)


@pytest.mark.parametrize("aud", ["https://evil.example", ["https://evil.example"], "missing"])
async def test_jwks_wrong_audience(
    jwks_client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any], aud: Any
) -> None:
    if aud == "missing":
        del issued["aud"]
    else:
        issued["aud"] = aud
    token = keys.ec.sign(issued, "ES256")
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), INVALID)


async def test_jwks_missing_kid(
    jwks_client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any]
) -> None:
    token = keys.ed25519.sign(issued, "EdDSA", kid=None)
    assert "kid" not in jwt.get_unverified_header(token)
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), INVALID)


async def test_jwks_unknown_kid_refetches_then_rejects(
    jwks_client: httpx.AsyncClient, keys: Keys, jwks: JwksDocument, issued: dict[str, Any]
) -> None:
    fetches = jwks.fetches
    token = keys.ed25519.sign(issued, "EdDSA", kid="no-such-kid")
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), INVALID)
    assert jwks.fetches == fetches + 1  # cooldown 0: one refetch per unknown kid


@pytest.mark.parametrize("kid", [None, "ed-1", "rsa-1"])
async def test_jwks_hs256_with_the_shared_secret_is_rejected(
    jwks_client: httpx.AsyncClient, issued: dict[str, Any], kid: str | None
) -> None:
    headers = {"kid": kid} if kid else None
    token = jwt.encode(issued, SECRET, algorithm="HS256", headers=headers)
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), INVALID)


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
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), INVALID)


async def test_jwks_alg_none_with_a_published_kid(
    jwks_client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any]
) -> None:
    token = f"{b64json({'alg': 'none', 'typ': 'JWT', 'kid': keys.ed25519.kid})}.{b64json(issued)}."
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), INVALID)


async def test_jwks_algorithm_of_another_key_type(
    jwks_client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any]
) -> None:
    # Validly RS256-signed by the published RSA key, but naming the EC key's kid.
    token = keys.rsa.sign(issued, "RS256", kid=keys.ec.kid)
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), INVALID)


async def test_jwks_unpublished_key_claiming_a_published_kid(
    jwks_client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any]
) -> None:
    impostor = SigningKey(keys.ed25519.kid, ed25519.Ed25519PrivateKey.generate())
    token = impostor.sign(issued, "EdDSA")
    assert jwt.get_unverified_header(token)["kid"] == keys.ed25519.kid
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), INVALID)


async def test_jwks_key_rotation_is_picked_up_by_a_refetch(
    jwks_client: httpx.AsyncClient, jwks: JwksDocument, issued: dict[str, Any]
) -> None:
    rotated = SigningKey(f"ed-rotated-{uuid.uuid4().hex[:8]}", ed25519.Ed25519PrivateKey.generate())
    token = rotated.sign(issued, "EdDSA")
    before = jwks.fetches
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), INVALID)
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


async def test_jwks_non_uuid_sub(
    jwks_client: httpx.AsyncClient, keys: Keys, jwks: JwksDocument
) -> None:
    # Better Auth's default ids are not UUIDs; this API requires UUID user ids.
    payload = claims("aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY", iss=jwks.base_url, aud=jwks.base_url)
    token = keys.ed25519.sign(payload, "EdDSA")
    assert_unauthorized(await jwks_client.get(TASKS, headers=bearer(token)), INVALID)


async def test_default_server_still_works_alongside_the_jwks_server(
    jwks_api: str, client: httpx.AsyncClient, keys: Keys, issued: dict[str, Any]
) -> None:
    # A token that the JWKS server accepts means nothing to the HS256 server ...
    token = keys.ed25519.sign(issued, "EdDSA")
    assert_unauthorized(await client.get(TASKS, headers=bearer(token)), INVALID)
    # ... which keeps serving its own users, with its own database pool.
    assert_empty_list(await client.get(TASKS, headers=bearer(hs(claims()))))
