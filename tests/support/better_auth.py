"""A real Better Auth server (clients/better-auth/server.mjs, npm better-auth with its jwt plugin)
for the tests, and a small client for Better Auth's own HTTP endpoints.

`running_better_auth(database_url, ...)` creates a database of its own on the same PostgreSQL
(never the API's tables), starts the Node server on a free loopback port, waits for its ready
line, and on exit stops it and drops the database. `BetterAuthUser` signs up and signs in over
HTTP like a browser does (cookie jar, Origin header) and fetches the tokens the frontend would
send to the API.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from impl.platform.database import connect_options
from scripts import node_tools
from tests.support.servers import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "clients" / "better-auth" / "server.mjs"
NODE_MODULES = ROOT / "node_modules"
KEY_ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
SERVER_PACKAGES = ("better-auth", "pg", "jose")


def _server_packages_current() -> bool:
    """better-auth, pg and jose installed at the versions package.json pins."""
    pins = json.loads((ROOT / "package.json").read_text())["devDependencies"]
    for name in SERVER_PACKAGES:
        manifest = NODE_MODULES / name / "package.json"
        if not manifest.is_file() or json.loads(manifest.read_text()).get("version") != pins[name]:
            return False
    return True


def node_binary() -> str:
    """The pinned node binary, with the server's packages installed (scripts/test.sh runs `npm ci`;
    here too when they are missing or stale, as on a fresh clone)."""
    node = node_tools.node()
    if not _server_packages_current():
        result = subprocess.run(
            [node_tools.npm(), "ci", "--no-audit", "--no-fund"], cwd=ROOT, capture_output=True, text=True,
            timeout=600, check=False,
        )
        if result.returncode != 0 or not _server_packages_current():
            raise RuntimeError(f"npm ci failed to install {SERVER_PACKAGES}:\n{result.stderr}")
    return node


def database_url_for(database_url: str, name: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(database_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _run_sql(database_url: str, statement: str) -> None:
    """One statement on its own connection, in a worker thread with its own event loop: the
    callers are synchronous fixtures, possibly while pytest-asyncio's loop exists."""

    async def run() -> None:
        connection = await asyncpg.connect(connect_options(database_url).dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, run()).result(timeout=60)


@dataclass
class BetterAuthServer:
    base_url: str
    secret: str = field(repr=False)
    key_alg: str | None
    id_mode: str
    rotation_seconds: float | None
    database: str
    process: subprocess.Popen[str] = field(repr=False)
    users: list[BetterAuthUser] = field(default_factory=list, repr=False)
    _stderr: list[str] = field(default_factory=list, repr=False)

    def _collect_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in iter(self.process.stderr.readline, ""):
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def jwks(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url}/api/auth/jwks", timeout=10)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def user(self, name: str | None = None) -> BetterAuthUser:
        """A new account: signed up (email and password) through the HTTP API."""
        user = BetterAuthUser(self, name or f"user-{secrets.token_hex(4)}")
        self.users.append(user)
        user.sign_up()
        return user


@contextmanager
def running_better_auth(
    database_url: str,
    *,
    key_alg: str | None = None,
    id_mode: str = "default",
    rotation_seconds: float | None = None,
) -> Iterator[BetterAuthServer]:
    """Better Auth on a free loopback port with a database of its own on the server of
    `database_url`. key_alg None: the jwt plugin's default (EdDSA); id_mode "uuid" sets
    `advanced.database.generateId: "uuid"`."""
    node = node_binary()
    database = f"better_auth_{secrets.token_hex(6)}"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    secret = secrets.token_urlsafe(48)
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env = {
        **keep,
        "BA_PORT": str(port),
        "BA_BASE_URL": base_url,
        "BA_SECRET": secret,
        "BA_DATABASE_URL": database_url_for(database_url, database),
        "BA_ID": id_mode,
        "NO_COLOR": "1",
    }
    if key_alg:
        env["BA_KEY_ALG"] = key_alg
    if rotation_seconds is not None:
        env["BA_ROTATION_SECONDS"] = str(rotation_seconds)
    _run_sql(database_url, f'CREATE DATABASE "{database}"')
    try:
        process = subprocess.Popen(
            [node, str(SERVER)], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        server = BetterAuthServer(
            base_url, secret, key_alg, id_mode, rotation_seconds, database, process
        )
        stderr_reader = threading.Thread(target=server._collect_stderr, daemon=True)
        stderr_reader.start()
        try:
            _wait_until_ready(server)
            yield server
        finally:
            for user in server.users:
                user.close()
            stop(process, timeout=STOP_TIMEOUT_SECONDS)
            stderr_reader.join(timeout=5)
    finally:
        _run_sql(database_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _wait_until_ready(server: BetterAuthServer) -> None:
    """Read stdout until `ready http://...` in a thread, so a silent hang still times out."""
    process = server.process
    assert process.stdout is not None
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in iter(process.stdout.readline, ""):
            lines.append(line)
            if line.startswith("ready "):
                ready.set()
        ready.set()  # EOF: the process exited

    threading.Thread(target=read, daemon=True).start()
    ready.wait(START_TIMEOUT_SECONDS)
    if not any(line.startswith("ready ") for line in lines):
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        time.sleep(0.2)  # let the stderr reader drain
        raise RuntimeError(
            f"Better Auth did not start (exit {process.returncode}); stdout:\n{''.join(lines)}"
            f"\nstderr:\n{server.stderr[-5000:]}"
        )


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a JWT, unverified: for looking at what Better Auth signs."""
    header, payload, _ = token.split(".")

    def decode(part: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return value

    return decode(header), decode(payload)


class BetterAuthError(AssertionError):
    pass


@dataclass
class BetterAuthUser:
    """One browser: a cookie jar against one Better Auth server."""

    server: BetterAuthServer = field(repr=False)
    name: str
    email: str = ""
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    id: str = ""
    http: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.email = self.email or f"{self.name}-{secrets.token_hex(4)}@example.com"
        # Better Auth checks Origin on POSTs that carry cookies (trustedOrigins = its baseURL).
        self.http = httpx.Client(
            base_url=self.server.base_url, timeout=30,
            headers={"Origin": self.server.base_url},
        )

    def _check(self, response: httpx.Response, what: str) -> httpx.Response:
        if response.status_code != 200:
            raise BetterAuthError(
                f"Better Auth {what}: {response.status_code} {response.text}\n"
                f"server stderr:\n{self.server.stderr[-3000:]}"
            )
        return response

    def sign_up(self) -> dict[str, Any]:
        response = self._check(self.http.post("/api/auth/sign-up/email", json={
            "email": self.email, "password": self.password, "name": self.name,
        }), "sign-up")
        user: dict[str, Any] = response.json()["user"]
        self.id = user["id"]
        return user

    def sign_in(self) -> dict[str, Any]:
        """A fresh sign-in (new session cookie), as after a logout or on another device."""
        self.http.cookies.clear()
        response = self._check(self.http.post("/api/auth/sign-in/email", json={
            "email": self.email, "password": self.password,
        }), "sign-in")
        user: dict[str, Any] = response.json()["user"]
        assert user["id"] == self.id
        return user

    def token(self) -> str:
        """GET /api/auth/token with the session cookie: {"token": "<JWT>"}."""
        response = self._check(self.http.get("/api/auth/token"), "token")
        token: str = response.json()["token"]
        return token

    def session_jwt(self) -> str:
        """The `set-auth-jwt` header of GET /api/auth/get-session (the jwt plugin's hook)."""
        response = self._check(self.http.get("/api/auth/get-session"), "get-session")
        assert response.json()["user"]["id"] == self.id
        token = response.headers.get("set-auth-jwt")
        if not token:
            raise BetterAuthError(f"no set-auth-jwt header: {dict(response.headers)}")
        return token

    def hs256_token(self, iss: str | None = None, aud: str | None = None) -> str:
        """GET /api/hs256-token: HS256 with the shared secret, as a Next.js route handler mints
        it (jose SignJWT, {sub: user.id}, iat, exp 15 min, iss/aud only when given)."""
        params = {k: v for k, v in (("iss", iss), ("aud", aud)) if v}
        response = self._check(self.http.get("/api/hs256-token", params=params), "hs256-token")
        token: str = response.json()["token"]
        return token

    def close(self) -> None:
        self.http.close()

