"""The API behind a REAL Better Auth server (npm better-auth with its jwt plugin, PostgreSQL):
users sign up and sign in over Better Auth's own HTTP endpoints, take the JWTs its jwt plugin
issues (`GET /api/auth/token`, the `set-auth-jwt` header of `GET /api/auth/get-session`) or the
HS256 token a Next.js route handler mints with the shared secret, and use them against
`task-api serve` run as users run it (JWKS mode: only `BETTER_AUTH_URL` set).

Better Auth servers and API servers are started lazily and kept for the module (`stacks`), one
per configuration, so the file needs few starts. The key-rotation test has servers of its own,
since it depends on when Better Auth creates its keys.

A refusal is checked down to its reason, in the body and in `WWW-Authenticate`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from impl.platform.token_verifier import WRONG_AUDIENCE
from tests.support.better_auth import (
    KEY_ALGORITHMS,
    BetterAuthServer,
    BetterAuthUser,
    jwt_parts,
    running_better_auth,
)
from tests.support.factories import THROUGH_PGBOUNCER
from tests.support.servers import TASK_API, free_port, server_environment, stop, wait_ready

pytestmark = pytest.mark.skipif(
    THROUGH_PGBOUNCER,
    reason="Better Auth tokens test authentication, not pooling: run in the direct pass only",
)

API_START_TIMEOUT_SECONDS = 60.0
ELSEWHERE = "https://elsewhere.example"
TOKEN_TTL_SECONDS = 15 * 60  # the jwt plugin's default expirationTime


# -- servers ------------------------------------------------------------------------------------


@contextmanager
def running_api(database_url: str, **env: str) -> Iterator[str]:
    """`task-api serve` as users start it, with only DATABASE_URL and `env` set; its base URL
    once /api/ready answers 200. Its output goes to a file, shown when it fails to start."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="task-api-ba-") as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [TASK_API, "serve", "--port", str(port)],
                env={**keep, **server_environment(database_url), **env}, cwd=tmp,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(process, base_url, log_path, API_START_TIMEOUT_SECONDS)
            yield base_url
        finally:
            stop(process, timeout=15)


class Stacks:
    """Better Auth servers and API servers, started on first use and kept until the module ends."""

    def __init__(self, database_url: str, exit_stack: ExitStack) -> None:
        self.database_url = database_url
        self._exit_stack = exit_stack
        self._better_auth: dict[tuple[str, str | None], BetterAuthServer] = {}
        self._apis: dict[tuple[tuple[str, str], ...], str] = {}

    def better_auth(self, id_mode: str = "uuid", alg: str | None = "EdDSA") -> BetterAuthServer:
        """id_mode "default" and alg None: Better Auth at its defaults (random 32-character ids,
        EdDSA keys)."""
        key = (id_mode, alg)
        if key not in self._better_auth:
            self._better_auth[key] = self._exit_stack.enter_context(
                running_better_auth(self.database_url, key_alg=alg, id_mode=id_mode)
            )
        return self._better_auth[key]

    def api(self, **env: str) -> str:
        key = tuple(sorted(env.items()))
        if key not in self._apis:
            self._apis[key] = self._exit_stack.enter_context(running_api(self.database_url, **env))
        return self._apis[key]


@pytest.fixture(scope="module")
def stacks(database_url: str) -> Iterator[Stacks]:
    with ExitStack() as exit_stack:
        yield Stacks(database_url, exit_stack)


# -- helpers ------------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(response: httpx.Response, reason: str) -> None:
    """401 with the reason in the body and in the RFC 6750 challenge."""
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == {"code": "UNAUTHORIZED", "message": reason}, body
    assert "request_id" in body["meta"], body
    assert f'error_description="{reason}"' in response.headers["www-authenticate"]


def create_and_get(api: str, user: BetterAuthUser, token: str) -> dict[str, Any]:
    """A token accepted: create (201) and read back (200) a task owned by the Better Auth user."""
    with httpx.Client(base_url=api, headers=bearer(token), timeout=30) as http:
        created = http.post("/api/tasks", json={"title": f"task of {user.name}"})
        assert created.status_code == 201, created.text
        task: dict[str, Any] = created.json()["data"]
        assert task["user_id"] == user.id
        fetched = http.get(f"/api/tasks/{task['id']}")
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["data"] == task
        return task


def crud_as(api: str, user: BetterAuthUser, token: str) -> dict[str, Any]:
    """The whole CRUD as a fresh Better Auth user: create, get, list with filters, PUT, PATCH
    (complete), stats, delete. Returns the task that is left (completed, "work")."""
    with httpx.Client(base_url=api, headers=bearer(token), timeout=30) as http:
        response = http.post(
            "/api/tasks",
            json={"title": f"{user.name}: groceries", "priority": "high", "tags": ["home"]},
        )
        assert response.status_code == 201, response.text
        task = response.json()["data"]
        assert task["user_id"] == user.id
        assert response.headers["location"] == f"/api/tasks/{task['id']}"
        response = http.post("/api/tasks", json={"title": f"{user.name}: call", "priority": "low"})
        assert response.status_code == 201, response.text
        other = response.json()["data"]
        assert other["user_id"] == user.id

        response = http.get(f"/api/tasks/{task['id']}")
        assert response.status_code == 200, response.text
        assert response.json()["data"] == task

        response = http.get("/api/tasks")
        assert response.status_code == 200, response.text
        assert {t["id"] for t in response.json()["data"]} == {task["id"], other["id"]}
        assert response.json()["meta"]["total"] == 2
        response = http.get("/api/tasks", params={"priority": "high", "tag": "home"})
        assert response.status_code == 200, response.text
        assert [t["id"] for t in response.json()["data"]] == [task["id"]]

        response = http.put(
            f"/api/tasks/{task['id']}",
            json={"title": f"{user.name}: report", "priority": "medium", "tags": ["work"]},
        )
        assert response.status_code == 200, response.text
        replaced = response.json()["data"]
        assert (replaced["title"], replaced["priority"], replaced["tags"]) == (
            f"{user.name}: report", "medium", ["work"]
        )
        assert replaced["user_id"] == user.id and replaced["version"] == task["version"] + 1

        response = http.patch(f"/api/tasks/{task['id']}", json={"completed": True})
        assert response.status_code == 200, response.text
        completed = response.json()["data"]
        assert completed["completed"] is True and completed["completed_at"] is not None
        response = http.get("/api/tasks", params={"status": "completed"})
        assert [t["id"] for t in response.json()["data"]] == [task["id"]]

        response = http.get("/api/tasks/stats")
        assert response.status_code == 200, response.text
        assert response.json()["data"] == {
            "total": 2, "completed": 1, "pending": 1, "overdue": 0,
            "by_priority": {"low": 1, "medium": 1, "high": 0},
        }

        response = http.delete(f"/api/tasks/{other['id']}")
        assert response.status_code == 204, response.text
        assert http.get(f"/api/tasks/{other['id']}").status_code == 404
        result: dict[str, Any] = completed
        return result


def listed_ids(api: str, token: str) -> set[str]:
    response = httpx.get(f"{api}/api/tasks", headers=bearer(token), params={"limit": 100})
    assert response.status_code == 200, response.text
    return {t["id"] for t in response.json()["data"]}


# -- Better Auth itself: what the API relies on --------------------------------------------------


def test_better_auth_defaults_tokens_and_jwks(stacks: Stacks) -> None:
    """Better Auth at its defaults: 32-character ids (not UUIDs), EdDSA keys published with
    `alg` and `crv`; its token names the key (`kid`), has sub = user id, iss = aud = baseURL,
    exp 15 minutes after iat, and carries the user record besides."""
    better_auth = stacks.better_auth(id_mode="default", alg=None)
    user = better_auth.user("dana")
    assert len(user.id) == 32 and user.id.isalnum()
    header, claims = jwt_parts(user.token())
    keys = {key["kid"]: key for key in better_auth.jwks()["keys"]}
    assert header["alg"] == "EdDSA" and header["kid"] in keys
    assert keys[header["kid"]]["alg"] == "EdDSA" and keys[header["kid"]]["crv"] == "Ed25519"
    assert keys[header["kid"]]["kty"] == "OKP" and "use" not in keys[header["kid"]]
    assert claims["sub"] == user.id and claims["id"] == user.id
    assert claims["iss"] == claims["aud"] == better_auth.base_url
    assert claims["exp"] - claims["iat"] == TOKEN_TTL_SECONDS
    assert claims["email"] == user.email and claims["name"] == user.name
    _, session_claims = jwt_parts(user.session_jwt())
    assert session_claims["sub"] == user.id


# -- two users, every operation, isolation ------------------------------------------------------


@pytest.mark.parametrize(
    ("id_mode", "alg"), [("default", None), ("uuid", "EdDSA")],
    ids=["default ids (32 chars)", "uuid ids"],
)
def test_two_better_auth_users_crud_and_isolation(
    stacks: Stacks, id_mode: str, alg: str | None
) -> None:
    better_auth = stacks.better_auth(id_mode=id_mode, alg=alg)
    api = stacks.api(BETTER_AUTH_URL=better_auth.base_url)
    alice, bob = better_auth.user("alice"), better_auth.user("bob")
    if id_mode == "uuid":
        assert str(uuid.UUID(alice.id)) == alice.id
    alice.sign_in()
    bob.sign_in()
    alice_tokens = {"token endpoint": alice.token(), "set-auth-jwt": alice.session_jwt()}
    bob_tokens = {"token endpoint": bob.token(), "set-auth-jwt": bob.session_jwt()}
    for token in (*alice_tokens.values(), *bob_tokens.values()):
        _, claims = jwt_parts(token)
        assert claims["iss"] == claims["aud"] == better_auth.base_url

    alice_task = crud_as(api, alice, alice_tokens["token endpoint"])
    bob_task = crud_as(api, bob, bob_tokens["set-auth-jwt"])

    # Both token sources name the same user: each sees the same tasks with either token.
    assert listed_ids(api, alice_tokens["set-auth-jwt"]) == {alice_task["id"]}
    assert listed_ids(api, alice_tokens["token endpoint"]) == {alice_task["id"]}
    assert listed_ids(api, bob_tokens["token endpoint"]) == {bob_task["id"]}

    with httpx.Client(base_url=api, headers=bearer(bob_tokens["token endpoint"])) as http:
        path = f"/api/tasks/{alice_task['id']}"
        attempts = {
            "GET": http.get(path),
            "PATCH": http.patch(path, json={"title": "taken over"}),
            "PUT": http.put(path, json={"title": "taken over"}),
            "DELETE": http.delete(path),
        }
        for method, response in attempts.items():
            assert response.status_code == 403, (method, response.text)
            assert response.json()["error"]["code"] == "FORBIDDEN"
        missing = http.get(f"/api/tasks/{uuid.uuid4()}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    unchanged = httpx.get(
        f"{api}/api/tasks/{alice_task['id']}", headers=bearer(alice_tokens["token endpoint"])
    )
    assert unchanged.status_code == 200 and unchanged.json()["data"] == alice_task
    assert bob_task["id"] not in listed_ids(api, alice_tokens["token endpoint"])


# -- every key type of the jwt plugin -----------------------------------------------------------


@pytest.mark.parametrize("alg", KEY_ALGORITHMS)
def test_each_better_auth_key_type_is_accepted(stacks: Stacks, alg: str) -> None:
    better_auth = stacks.better_auth(id_mode="uuid", alg=alg)
    api = stacks.api(BETTER_AUTH_URL=better_auth.base_url)
    user = better_auth.user(f"user-{alg.lower()}")
    token = user.token()
    header, _ = jwt_parts(token)
    published = {key["kid"]: key for key in better_auth.jwks()["keys"]}
    assert header["alg"] == alg and published[header["kid"]]["alg"] == alg
    create_and_get(api, user, token)


# -- key rotation -------------------------------------------------------------------------------


ROTATION_SECONDS = 3.0
SLOW_ACCEPTANCE_LIMIT_SECONDS = 45.0  # only to measure how late a refused new key gets accepted


def test_rotated_key_is_accepted_on_its_first_request(database_url: str) -> None:
    """Better Auth with `jwks.rotationInterval`: once the current key is older than the interval,
    the next token it signs uses a NEW key (created at that moment, published at once; the old key
    stays published for the grace period, 30 days by default). The API, with its default
    settings, must accept the new key's first token on its first request, and still the old one."""
    with running_better_auth(
        database_url, key_alg="EdDSA", id_mode="uuid", rotation_seconds=ROTATION_SECONDS
    ) as better_auth, running_api(database_url, BETTER_AUTH_URL=better_auth.base_url) as api:
        user = better_auth.user("rotating")
        first = user.token()
        first_kid = jwt_parts(first)[0]["kid"]
        create_and_get(api, user, first)

        time.sleep(ROTATION_SECONDS + 0.5)
        second = user.token()
        minted = time.monotonic()
        second_kid = jwt_parts(second)[0]["kid"]
        assert second_kid != first_kid, "Better Auth did not rotate its key"
        assert {first_kid, second_kid} <= {key["kid"] for key in better_auth.jwks()["keys"]}

        with httpx.Client(base_url=api, headers=bearer(second), timeout=30) as http:
            first_response = http.post("/api/tasks", json={"title": "signed with the new key"})
            accepted_after: float | None = None
            if first_response.status_code == 201:
                accepted_after = time.monotonic() - minted
            else:  # measure how long the API takes to accept it, then fail below
                while time.monotonic() - minted < SLOW_ACCEPTANCE_LIMIT_SECONDS:
                    time.sleep(0.5)
                    if http.get("/api/tasks").status_code == 200:
                        accepted_after = time.monotonic() - minted
                        break
        shown = "never" if accepted_after is None else f"{accepted_after:.3f} s"
        print(
            f"\nkey rotation: new kid {second_kid}; first API answer {first_response.status_code};"
            f" new key's first token to its first accepted API response: {shown}"
        )
        assert first_response.status_code == 201, (
            f"the new key's first token was refused ({first_response.text}); accepted after "
            f"{shown}"
        )
        assert first_response.json()["data"]["user_id"] == user.id
        # The old key is still published (grace period): its token still works.
        still = httpx.get(f"{api}/api/tasks", headers=bearer(first))
        assert still.status_code == 200, still.text


# -- HS256 minted by a Next.js route handler with the shared secret ------------------------------


def test_hs256_route_requires_a_session(stacks: Stacks) -> None:
    better_auth = stacks.better_auth()
    response = httpx.get(f"{better_auth.base_url}/api/hs256-token")
    assert response.status_code == 401


def test_hs256_without_iss_aud_is_accepted_with_the_secret_only(stacks: Stacks) -> None:
    better_auth = stacks.better_auth()
    api = stacks.api(BETTER_AUTH_SECRET=better_auth.secret)
    user = better_auth.user("hs-plain")
    token = user.hs256_token()
    header, claims = jwt_parts(token)
    assert header["alg"] == "HS256" and "kid" not in header
    assert claims["sub"] == user.id and claims["exp"] - claims["iat"] == TOKEN_TTL_SECONDS
    assert "iss" not in claims and "aud" not in claims
    create_and_get(api, user, token)


def test_hs256_with_iss_aud_is_accepted_with_the_secret_only(stacks: Stacks) -> None:
    """No issuer/audience configured on the API: iss and aud in the token are not checked."""
    better_auth = stacks.better_auth()
    api = stacks.api(BETTER_AUTH_SECRET=better_auth.secret)
    user = better_auth.user("hs-iss-aud")
    token = user.hs256_token(iss=better_auth.base_url, aud=better_auth.base_url)
    _, claims = jwt_parts(token)
    assert claims["iss"] == claims["aud"] == better_auth.base_url
    create_and_get(api, user, token)


def test_hs256_with_the_right_iss_aud_is_accepted_when_the_url_is_set_too(stacks: Stacks) -> None:
    better_auth = stacks.better_auth()
    api = stacks.api(
        BETTER_AUTH_SECRET=better_auth.secret, BETTER_AUTH_URL=better_auth.base_url
    )
    user = better_auth.user("hs-both")
    token = user.hs256_token(iss=better_auth.base_url, aud=better_auth.base_url)
    create_and_get(api, user, token)


def test_hs256_with_a_wrong_aud_is_refused_when_the_url_is_set_too(stacks: Stacks) -> None:
    better_auth = stacks.better_auth()
    api = stacks.api(
        BETTER_AUTH_SECRET=better_auth.secret, BETTER_AUTH_URL=better_auth.base_url
    )
    user = better_auth.user("hs-wrong-aud")
    token = user.hs256_token(iss=better_auth.base_url, aud=ELSEWHERE)
    assert_unauthorized(
        httpx.post(f"{api}/api/tasks", json={"title": "x"}, headers=bearer(token)),
        WRONG_AUDIENCE,
    )


# -- refused: a real Better Auth token for another audience --------------------------------------


def test_better_auth_token_refused_by_an_api_expecting_another_audience(stacks: Stacks) -> None:
    better_auth = stacks.better_auth()
    user = better_auth.user("elsewhere")
    token = user.token()
    accepting = stacks.api(BETTER_AUTH_URL=better_auth.base_url)
    refusing = stacks.api(BETTER_AUTH_URL=better_auth.base_url, JWT_AUDIENCE=ELSEWHERE)
    assert_unauthorized(httpx.get(f"{refusing}/api/tasks", headers=bearer(token)), WRONG_AUDIENCE)
    # The same token is fine where the audience is Better Auth's URL: only aud made the difference.
    assert httpx.get(f"{accepting}/api/tasks", headers=bearer(token)).status_code == 200
