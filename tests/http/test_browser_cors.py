"""A real browser on another origin: clients/browser/ (openapi-fetch with types generated from
openapi.yaml, type-checked by tsc, bundled by esbuild) is served by a static server on one
loopback origin and calls `task-api serve` on another, in Debian's headless Chromium.

- From an origin in CORS_ORIGINS the page creates, lists, reads the ETag (exposed by CORS),
  patches with If-Match, is refused a stale If-Match, deletes with If-Match and shows a 404 and
  a 422 envelope; the test checks each call the page recorded, the server's access log (the
  preflights and every request) and what is in PostgreSQL.
- From an origin not in CORS_ORIGINS a list, a create, a PATCH and a DELETE (each one
  preflighted: Authorization, a JSON body, If-Match) fail in the page with a TypeError; the
  server saw only the refused preflights, and PostgreSQL is unchanged. The same probe from the
  allowed origin (the control) does reach the server and write.

Screenshots: artifacts/browser-cors.png (allowed) and artifacts/browser-cors-blocked.png.
The types and the bundle are generated on every run, never committed. Nothing here depends on
the pooler: skipped in the PgBouncer pass."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest

from scripts import node_tools
from tests.support.artifacts import ARTIFACTS
from tests.support.chromium import (
    PNG_SIGNATURE,
    decode_png,
    find_chromium,
    run_chromium,
    static_server,
)
from tests.support.factories import THROUGH_PGBOUNCER, User, new_user
from tests.support.servers import (
    SECRET,
    TASK_API,
    free_port,
    server_environment,
    stop,
    wait_ready,
)

pytestmark = pytest.mark.skipif(
    THROUGH_PGBOUNCER, reason="browser origins do not depend on the pooler: direct pass only"
)

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "openapi.yaml"
PAGE = ROOT / "clients" / "browser"
NODE_MODULES = ROOT / "node_modules"
BIN = NODE_MODULES / ".bin"
NODE_TOOLS = ("esbuild", "openapi-fetch", "openapi-typescript", "typescript")
WINDOW = (1280, 1600)

# Flat fills of the page's status cells (clients/browser/index.html): ok, error envelope, blocked.
OK_FILL, ERROR_FILL, BLOCKED_FILL = (bytes.fromhex(c) for c in ("ccf2d6", "ffe1b8", "ffc9c9"))


def command(args: list[str | Path], timeout: float = 120) -> None:
    result = subprocess.run(
        [str(arg) for arg in args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"{args[0]} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )


def node_tools_current() -> bool:
    pins = json.loads((ROOT / "package.json").read_text())["devDependencies"]
    for name in NODE_TOOLS:
        manifest = NODE_MODULES / name / "package.json"
        if not manifest.is_file() or json.loads(manifest.read_text())["version"] != pins[name]:
            return False
    return True


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page as a frontend team would ship it: types generated from the contract, a strict
    tsc check, one esbuild bundle (app.js) beside index.html."""
    if not node_tools_current():
        command([node_tools.npm(), "ci", "--no-audit", "--no-fund"], timeout=600)
        assert node_tools_current(), "npm ci did not install the versions pinned in package.json"
    command([BIN / "openapi-typescript", CONTRACT, "--default-non-nullable", "false",
             "-o", PAGE / "src" / "api.d.ts"])
    command([BIN / "tsc", "-p", PAGE])
    out = tmp_path_factory.mktemp("browser-site")
    command([BIN / "esbuild", PAGE / "src" / "main.ts", "--bundle", "--format=esm",
             "--target=es2022", f"--outfile={out / 'app.js'}", "--log-level=warning"])
    shutil.copy(PAGE / "index.html", out / "index.html")
    return out


@dataclass
class Origins:
    allowed: str  # in CORS_ORIGINS
    foreign: str  # the same files on another port: another origin, not allowed


@pytest.fixture(scope="module")
def origins(site: Path) -> Iterator[Origins]:
    with static_server(site) as allowed, static_server(site) as foreign:
        yield Origins(allowed, foreign)


@dataclass
class Api:
    url: str
    log_path: Path

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def requests_since(self, offset: int, at_least: int) -> list[tuple[str, str, int]]:
        """(method, path, status) of each access-log line written after `offset`, waiting up to
        5 s for `at_least` of them (a line is written once its response is sent)."""
        deadline = time.monotonic() + 5
        while True:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                lines = log.read().decode().splitlines()
            seen = []
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("logger") == "task_api.access":
                    seen.append((entry["method"], entry["path"], entry["status"]))
            if len(seen) >= at_least or time.monotonic() > deadline:
                return seen
            time.sleep(0.05)


@pytest.fixture(scope="module")
def api(
    database_url: str, origins: Origins, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """`task-api serve` as a user starts it, CORS_ORIGINS from the environment allowing only the
    page's first origin; its JSON access log (stderr) goes to a file."""
    directory = tmp_path_factory.mktemp("browser-api")  # no .env here
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env = {
        **keep, **server_environment(database_url), "BETTER_AUTH_SECRET": SECRET,
        "CORS_ORIGINS": json.dumps([origins.allowed]), "LOG_LEVEL": "INFO", "LOG_FORMAT": "json",
    }
    port = free_port()
    log_path = directory / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [TASK_API, "serve", "--port", str(port)], env=env, cwd=directory,
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, log_path)
        server = Api(url, log_path)
        # The readiness check's own access line is in the log before any test reads it.
        assert ("GET", "/api/ready", 200) in server.requests_since(0, at_least=1)
        yield server
    finally:
        stop(process, timeout=15)


# -- the page in Chromium ----------------------------------------------------------------------


@dataclass
class Page:
    state: str
    summary: str
    results: dict[str, Any]

    def steps(self) -> dict[str, dict[str, Any]]:
        return {step["step"]: step for step in self.results["steps"]}


class _Dom(HTMLParser):
    """body[data-state], #summary and #results (the JSON the page rendered)."""

    def __init__(self) -> None:
        super().__init__()
        self.state = ""
        self.text: dict[str, str] = {"summary": "", "results": ""}
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "body":
            self.state = attributes.get("data-state") or ""
        if attributes.get("id") in self.text:
            self._in = attributes["id"]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "pre"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self.text[self._in] += data


def open_page(chromium: str, origin: str, screenshot: Path, **fragment: str) -> Page:
    """index.html on `origin`, configured by its URL fragment; one Chromium run dumps the DOM
    after the page settles and saves the screenshot."""
    screenshot.parent.mkdir(exist_ok=True)
    screenshot.unlink(missing_ok=True)
    width, height = WINDOW
    run = run_chromium(
        chromium, f"{origin}/index.html#{urlencode(fragment)}", "--dump-dom",
        f"--screenshot={screenshot}", f"--window-size={width},{height}",
    )
    dom = _Dom()
    dom.feed(run.stdout)
    summary = " ".join(dom.text["summary"].split())
    assert dom.state == "done", f"the page did not finish ({dom.state!r}): {summary}\n{run.stdout}"
    results = json.loads(dom.text["results"])
    assert results["page_origin"] == origin and results["mode"] == fragment["mode"], results
    return Page(dom.state, summary, results)


def check_screenshot(path: Path, *fills: bytes) -> None:
    assert path.is_file(), f"Chromium wrote no screenshot at {path}"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    image = decode_png(data)
    assert (image.width, image.height) == WINDOW
    for fill in fills:
        assert image.has_colour(fill), f"{path}: no status cell filled #{fill.hex()}"


# -- PostgreSQL ----------------------------------------------------------------------------------


async def snapshot(db: asyncpg.Connection, user_id: str) -> dict[str, Any]:
    """Everything stored for the user, every column, plus the table-wide counts."""
    tasks = await db.fetch("SELECT * FROM tasks WHERE user_id = $1 ORDER BY id", user_id)
    keys = await db.fetch(
        "SELECT * FROM idempotency_keys WHERE user_id = $1 ORDER BY key", user_id
    )
    counts = await db.fetch("SELECT * FROM task_counts WHERE user_id = $1", user_id)
    totals = await db.fetchrow(
        "SELECT (SELECT count(*) FROM tasks) AS tasks, (SELECT max(updated_at) FROM tasks) AS"
        " last_update, (SELECT count(*) FROM idempotency_keys) AS idempotency_keys"
    )
    return {
        "tasks": [dict(row) for row in tasks], "idempotency_keys": [dict(row) for row in keys],
        "task_counts": [dict(row) for row in counts], "totals": dict(totals or {}),
    }


async def create_task(api: Api, user: User, title: str) -> dict[str, Any]:
    """A task written over plain HTTP (no Origin header: not a browser). Returns once its
    access-log line is written too (after the response is sent: on a busy machine it could
    land after a test's log offset and pass for one of the browser's requests)."""
    before = api.log_size()
    async with httpx.AsyncClient(base_url=api.url) as http:
        response = await http.post("/api/tasks", json={"title": title}, headers=user.headers)
    assert response.status_code == 201, response.text
    assert api.requests_since(before, at_least=1)[-1][:2] == ("POST", "/api/tasks")
    task: dict[str, Any] = response.json()["data"]
    return task


# -- the tests -----------------------------------------------------------------------------------

FLOW = [  # step, method, status
    ("create", "POST", 201), ("create second", "POST", 201), ("list", "GET", 200),
    ("read", "GET", 200), ("patch", "PATCH", 200), ("stale patch", "PATCH", 412),
    ("delete", "DELETE", 204), ("read deleted", "GET", 404), ("invalid create", "POST", 422),
]


def envelope_error(step: dict[str, Any], code: str) -> dict[str, Any]:
    body = step["body"]
    assert body["error"]["code"] == code, step
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], step
    # X-Request-ID is exposed: the page reads it, and it is the envelope's request id.
    assert step["headers"]["x-request-id"] == body["meta"]["request_id"], step
    error: dict[str, Any] = body["error"]
    return error


async def test_page_on_an_allowed_origin_uses_the_api(
    chromium: str, origins: Origins, api: Api, db: asyncpg.Connection
) -> None:
    user = new_user()
    log_offset = api.log_size()
    page = open_page(chromium, origins.allowed, ARTIFACTS / "browser-cors.png",
                     api=api.url, token=user.token, mode="flow")
    steps = page.steps()
    assert [(name, step["outcome"], step.get("status")) for name, step in steps.items()] == [
        (name, "response", status) for name, _, status in FLOW
    ], f"{page.summary}\n{page.results}"
    assert page.summary == f"done: {len(FLOW)} calls"

    created = steps["create"]["body"]["data"]
    task_id = created["id"]
    assert (created["title"], created["priority"], created["tags"], created["version"]) == (
        "Written from another origin", "high", ["browser", "cors"], 1)
    assert created["user_id"] == user.id
    # ETag, Location and X-Request-ID are readable by a page on another origin.
    assert steps["create"]["headers"] == {
        "etag": '"1"', "location": f"/api/tasks/{task_id}",
        "x-request-id": steps["create"]["body"]["meta"]["request_id"],
        "content-type": "application/json",
    }
    doomed_id = steps["create second"]["body"]["data"]["id"]

    listed = steps["list"]["body"]
    assert sorted(task["id"] for task in listed["data"]) == sorted([task_id, doomed_id])
    assert listed["meta"]["total"] == 2

    assert steps["read"]["body"]["data"] == created
    assert steps["read"]["headers"]["etag"] == '"1"'
    assert steps["patch"]["request"] == 'PATCH /api/tasks/{id} If-Match: "1"'

    patched = steps["patch"]["body"]["data"]
    assert (patched["id"], patched["title"], patched["completed"], patched["version"]) == (
        task_id, "Patched from another origin", True, 2)
    assert patched["completed_at"] is not None
    assert steps["patch"]["headers"]["etag"] == '"2"'

    envelope_error(steps["stale patch"], "PRECONDITION_FAILED")
    assert steps["delete"]["body"] is None and steps["delete"]["headers"]["etag"] is None
    envelope_error(steps["read deleted"], "NOT_FOUND")
    invalid = envelope_error(steps["invalid create"], "VALIDATION_ERROR")
    assert [detail["field"] for detail in invalid["details"]] == ["body.title"], invalid

    # The server saw preflights (the page really is cross-origin) and then each call once.
    seen = api.requests_since(log_offset, at_least=len(FLOW) + 1)
    preflights = [entry for entry in seen if entry[0] == "OPTIONS"]
    assert preflights and all(status == 200 for _, _, status in preflights), seen
    assert [(method, status) for method, _, status in seen if method != "OPTIONS"] == [
        (method, status) for _, method, status in FLOW
    ], seen

    # What the page wrote is in PostgreSQL: the patched task, the deleted one gone.
    stored = await snapshot(db, user.id)
    assert [(str(row["id"]), row["title"], row["description"], row["priority"], row["tags"],
             row["completed"], row["version"]) for row in stored["tasks"]] == [
        (task_id, "Patched from another origin", "Created by the bundled client in Chromium",
         "high", ["browser", "cors"], True, 2),
    ]
    assert stored["tasks"][0]["completed_at"] is not None
    assert [str(row["task_id"]) for row in stored["idempotency_keys"]] == [task_id]

    check_screenshot(ARTIFACTS / "browser-cors.png", OK_FILL, ERROR_FILL)


async def test_page_on_a_foreign_origin_is_blocked(
    chromium: str, origins: Origins, api: Api, db: asyncpg.Connection
) -> None:
    user = new_user()
    task = await create_task(api, user, "Only its owner's browser may change this")
    before = await snapshot(db, user.id)
    log_offset = api.log_size()

    page = open_page(chromium, origins.foreign, ARTIFACTS / "browser-cors-blocked.png",
                     api=api.url, token=user.token, mode="probe", task=task["id"])
    # Every call failed inside the browser, as fetch fails on a network error.
    assert [
        (step["step"], step["outcome"], step.get("status"), (step.get("error") or {}).get("name"))
        for step in page.results["steps"]
    ] == [
        (name, "network-error", None, "TypeError") for name in ("list", "create", "patch", "delete")
    ], page.results

    # Each call was preflighted (JSON body, Authorization, If-Match), the server refused each
    # preflight, and no request itself ever reached it.
    seen = api.requests_since(log_offset, at_least=4)
    path = f"/api/tasks/{task['id']}"
    assert seen == [("OPTIONS", "/api/tasks", 400), ("OPTIONS", "/api/tasks", 400),
                    ("OPTIONS", path, 400), ("OPTIONS", path, 400)], seen
    assert await snapshot(db, user.id) == before

    # What the browser was told: no Access-Control-Allow-Origin for this origin, unlike for the
    # allowed one.
    for origin, status, allow in ((origins.foreign, 400, None),
                                  (origins.allowed, 200, origins.allowed)):
        async with httpx.AsyncClient(base_url=api.url) as http:
            preflight = await http.options("/api/tasks", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            })
        assert (preflight.status_code, preflight.headers.get("access-control-allow-origin")) == (
            status, allow)

    check_screenshot(ARTIFACTS / "browser-cors-blocked.png", BLOCKED_FILL)


async def test_the_same_probe_from_the_allowed_origin_writes(
    chromium: str, origins: Origins, api: Api, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """The control for the test above: the same page, calls and server, only the origin
    differs; here every call reaches the server and the writes land."""
    user = new_user()
    task = await create_task(api, user, "Its owner's browser changes this")
    log_offset = api.log_size()
    page = open_page(chromium, origins.allowed, tmp_path / "control.png",
                     api=api.url, token=user.token, mode="probe", task=task["id"])
    assert [(step["step"], step["outcome"], step.get("status"))
            for step in page.results["steps"]] == [
        ("list", "response", 200), ("create", "response", 201),
        ("patch", "response", 200), ("delete", "response", 412),  # If-Match "1", now at 2
    ], page.results
    seen = api.requests_since(log_offset, at_least=4)
    assert [method for method, _, _ in seen if method != "OPTIONS"] == [
        "GET", "POST", "PATCH", "DELETE"], seen
    stored = await snapshot(db, user.id)
    assert sorted(row["title"] for row in stored["tasks"]) == [
        "Changed by the probe", "Written by the probe"]
