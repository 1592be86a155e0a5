"""The MCP server, proven with the SDK's own client over streamable HTTP against `task-api serve`
and real PostgreSQL: the tools it lists are the generated ones; two users add, list with
filters, complete, replace, update and delete through them, each only ever reaching their own
tasks (403 and 404 come back as tool errors); bad arguments give a clear tool error and change
nothing; and /mcp itself refuses a request without a valid token, as the API does.

Each flow runs twice: with the 2025 protocol (initialize, then requests) and with the
2026-07-28 one the SDK's client picks by default (self-contained requests).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from generated.mcp_tools import TOOLS
from impl.platform.token_verifier import mint_hs256
from scripts import node_tools
from tests.http.test_auth import JwksDocument, Keys, claims, jwks, keys  # noqa: F401 (fixtures)
from tests.http.test_better_auth import running_api
from tests.support.factories import User, new_user
from tests.support.servers import SECRET, random_user_id

ALLOWED_ORIGIN = "https://app.example.com"
MODES = ["legacy", "auto"]  # the 2025 handshake; the SDK's default (2026-07-28)


@pytest.fixture(scope="module")
def api_url(database_url: str) -> Iterator[str]:
    with running_api(database_url, BETTER_AUTH_SECRET=SECRET, CORS_ORIGINS=ALLOWED_ORIGIN) as url:
        yield url


@asynccontextmanager
async def connect(api_url: str, token: str, mode: str) -> AsyncIterator[Client]:
    """The SDK's client on /mcp, every request carrying the user's bearer token."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(f"{api_url}/mcp", http_client=http)
        async with Client(transport, mode=mode) as client:
            yield client


def ok(result: CallToolResult) -> Any:
    assert not result.is_error, result.content
    return result.structured_content


def refused(result: CallToolResult, code: str) -> dict[str, Any]:
    """A tool error carrying the API's error code and message, in the text an assistant reads
    and in the envelope's JSON after it; never as structured content, which a TypeScript client
    would check against the tool's output schema (impl/mcp/tools.py)."""
    assert result.is_error, result.structured_content
    assert result.structured_content is None
    return error_in(
        [block.text for block in result.content],  # type: ignore[union-attr]
        code,
    )


def error_in(texts: list[str], code: str) -> dict[str, Any]:
    """The error of a tool error's two text blocks: `CODE: message` (and a line per field),
    then the API's envelope as JSON."""
    assert len(texts) == 2, texts
    envelope = json.loads(texts[1])
    error: dict[str, Any] = envelope["error"]
    assert error["code"] == code, error
    assert texts[0].startswith(f"{code}: {error['message']}"), texts[0]
    for detail in error.get("details") or []:
        assert f"- {detail['field']}: {detail['message']}" in texts[0]
    return error


async def rows(db: asyncpg.Connection, user: User) -> list[dict[str, Any]]:
    records = await db.fetch("SELECT * FROM tasks WHERE user_id = $1 ORDER BY id", user.id)
    return [dict(record) for record in records]


@pytest.mark.parametrize("mode", MODES)
async def test_lists_the_tools_generated_from_the_contract(api_url: str, mode: str) -> None:
    user = new_user()
    async with connect(api_url, user.token, mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert list(listed) == [tool.name for tool in TOOLS]
    for tool in TOOLS:
        served = listed[tool.name]
        assert served.input_schema == tool.input_schema
        assert served.output_schema == tool.output_schema
        assert (served.title, served.description) == (tool.title, tool.description)
        assert served.annotations is not None
        assert served.annotations.read_only_hint is (tool.method == "GET")
    assert listed["add_task"].input_schema["required"] == ["title"]
    assert listed["update_task"].input_schema["required"] == ["task_id"]
    assert "if_match" in listed["update_task"].input_schema["properties"]
    assert listed["delete_task"].annotations.destructive_hint is True  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
async def test_two_users_manage_their_tasks_through_the_tools(
    api_url: str, db: asyncpg.Connection, mode: str
) -> None:
    alice, bob = new_user(), new_user()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()
    async with connect(api_url, alice.token, mode) as a, connect(api_url, bob.token, mode) as b:
        # "Add a task to buy milk tomorrow", retried with the same Idempotency-Key: one task.
        milk_args = {"title": "Buy milk", "due_date": tomorrow, "tags": ["home"],
                     "idempotency_key": f"milk-{uuid.uuid4()}"}
        milk = ok(await a.call_tool("add_task", milk_args))
        assert ok(await a.call_tool("add_task", milk_args))["id"] == milk["id"]
        assert (milk["user_id"], milk["completed"], milk["priority"]) == (alice.id, False, "medium")
        report = ok(await a.call_tool("add_task", {"title": "Write report", "priority": "high"}))
        bobs = ok(await b.call_tool("add_task", {"title": "Bob's own", "tags": ["home"]}))

        # List with filters: alice's pending home tasks are her milk only, never bob's.
        page = ok(await a.call_tool("list_tasks", {"status": "pending", "tag": "home"}))
        assert [t["id"] for t in page["data"]] == [milk["id"]]
        assert page["meta"]["total"] == 1 and page["meta"]["next_cursor"] is None
        page = ok(await a.call_tool("list_tasks", {"sort": "title", "limit": 1}))
        assert [t["title"] for t in page["data"]] == ["Buy milk"]
        cursor = page["meta"]["next_cursor"]
        page = ok(await a.call_tool("list_tasks", {"sort": "title", "limit": 1, "cursor": cursor}))
        assert [t["title"] for t in page["data"]] == ["Write report"]
        assert [t["id"] for t in ok(await b.call_tool("list_tasks", {}))["data"]] == [bobs["id"]]

        # Complete (with the ETag it was read at), replace, update, stats.
        done = ok(await a.call_tool("update_task", {
            "task_id": milk["id"], "completed": True, "if_match": f'"{milk["version"]}"'}))
        assert done["completed"] is True and done["completed_at"] is not None
        completed = ok(await a.call_tool("list_tasks", {"status": "completed"}))
        assert [t["id"] for t in completed["data"]] == [milk["id"]]
        replaced = ok(await a.call_tool("replace_task", {
            "task_id": report["id"], "title": "Write the quarterly report"}))
        assert (replaced["title"], replaced["priority"]) == ("Write the quarterly report", "medium")
        updated = ok(await a.call_tool("update_task", {
            "task_id": report["id"], "description": "Due Friday", "tags": ["work"]}))
        assert (updated["description"], updated["tags"]) == ("Due Friday", ["work"])
        assert ok(await a.call_tool("get_task", {"task_id": report["id"]})) == updated
        stats = ok(await a.call_tool("get_task_stats", {}))
        assert (stats["total"], stats["completed"], stats["pending"]) == (2, 1, 1)

        # Isolation: bob can neither read nor change nor delete alice's task (403), and an
        # unknown id is a 404; alice's rows are exactly as they were.
        before = await rows(db, alice)
        refused(await b.call_tool("get_task", {"task_id": milk["id"]}), "FORBIDDEN")
        refused(await b.call_tool("update_task", {"task_id": milk["id"], "completed": False}),
                "FORBIDDEN")
        refused(await b.call_tool("replace_task", {"task_id": milk["id"], "title": "Mine"}),
                "FORBIDDEN")
        refused(await b.call_tool("delete_task", {"task_id": milk["id"]}), "FORBIDDEN")
        refused(await b.call_tool("get_task", {"task_id": str(uuid.uuid4())}), "NOT_FOUND")
        assert await rows(db, alice) == before
        assert ok(await b.call_tool("get_task_stats", {}))["total"] == 1

        # Delete: the result is the contract's description of the 204; then it is gone.
        deleted = await a.call_tool("delete_task", {"task_id": milk["id"]})
        assert not deleted.is_error and deleted.structured_content is None
        assert deleted.content[0].text == "The task was deleted; no body."  # type: ignore[union-attr]
        refused(await a.call_tool("get_task", {"task_id": milk["id"]}), "NOT_FOUND")

    assert [(r["id"], r["title"]) for r in await rows(db, alice)] == [
        (uuid.UUID(report["id"]), "Write the quarterly report")]
    assert [r["id"] for r in await rows(db, bob)] == [uuid.UUID(bobs["id"])]


@pytest.mark.parametrize("mode", MODES)
async def test_bad_arguments_give_a_tool_error_and_change_nothing(
    api_url: str, db: asyncpg.Connection, mode: str
) -> None:
    alice = new_user()
    async with connect(api_url, alice.token, mode) as client:
        task = ok(await client.call_tool("add_task", {"title": "Keep me", "priority": "low"}))
        before = await rows(db, alice)
        task_id = task["id"]

        error = refused(await client.call_tool("add_task", {"title": " "}), "VALIDATION_ERROR")
        assert error["details"][0]["field"] == "body.title"
        error = refused(await client.call_tool("add_task", {"title": "x", "priority": "urgent"}),
                        "VALIDATION_ERROR")
        assert error["details"][0]["field"] == "body.priority"
        refused(await client.call_tool("add_task", {}), "VALIDATION_ERROR")
        error = refused(await client.call_tool("add_task", {"title": "x", "user_id": "bob"}),
                        "VALIDATION_ERROR")
        assert error["details"][0]["field"] == "user_id"
        assert "Unknown argument" in error["details"][0]["message"]
        error = refused(await client.call_tool("update_task", {"task_id": task_id,
                                                               "completed": "yes please"}),
                        "VALIDATION_ERROR")
        assert error["details"][0]["field"] == "body.completed"
        refused(await client.call_tool("update_task", {"task_id": task_id, "title": None}),
                "VALIDATION_ERROR")
        refused(await client.call_tool("update_task", {"task_id": task_id, "completed": True,
                                                       "if_match": '"999"'}),
                "PRECONDITION_FAILED")
        error = refused(await client.call_tool("list_tasks", {"limit": 1000}), "VALIDATION_ERROR")
        assert error["details"][0]["field"] == "query.limit"
        refused(await client.call_tool("list_tasks", {"due_before": "tomorrow"}),
                "VALIDATION_ERROR")
        error = refused(await client.call_tool("get_task", {"task_id": "not-a-uuid"}),
                        "VALIDATION_ERROR")
        assert error["details"][0]["field"] == "path.task_id"
        # A path argument never reaches another resource: "stats" is not a task, "../x" no path.
        for sneaky in ("stats", "../tasks", f"{task_id}/x", ""):
            error = refused(await client.call_tool("delete_task", {"task_id": sneaky}),
                            "VALIDATION_ERROR")
            assert error["details"][0]["field"] == "path.task_id"
        refused(await client.call_tool("get_task", {}), "VALIDATION_ERROR")
        with pytest.raises(MCPError, match="Unknown tool: drop_tasks"):
            await client.call_tool("drop_tasks", {})
        # Nothing changed, and the task is still there as it was.
        assert ok(await client.call_tool("get_task", {"task_id": task_id})) == task
    assert await rows(db, alice) == before


INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "test", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def post_mcp(api_url: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{api_url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **headers},
                      timeout=30)


def test_the_endpoint_refuses_a_request_without_a_valid_token(api_url: str) -> None:
    """Like every secured operation: 401 with the envelope and WWW-Authenticate saying why."""
    user_id = random_user_id()
    cases = {
        "Authorization header required": {},
        "Invalid token: bad signature": {
            "Authorization": f"Bearer {mint_hs256('another-secret-' + 'y' * 40, user_id)}"},
        "Token expired": {"Authorization": f"Bearer {mint_hs256(SECRET, user_id, -600)}"},
        "Invalid token: malformed": {"Authorization": "Bearer not.a.jwt"},
    }
    for message, headers in cases.items():
        response = post_mcp(api_url, **headers)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == {"code": "UNAUTHORIZED", "message": message}
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="task-api"')
        assert response.headers["X-Request-ID"] == response.json()["meta"]["request_id"]
    good = post_mcp(api_url, Authorization=f"Bearer {mint_hs256(SECRET, user_id)}")
    assert good.status_code == 200, good.text
    assert good.json()["result"]["serverInfo"]["name"] == "task-api"
    assert good.headers["RateLimit-Policy"].startswith('"per-user"')


def leaf_errors(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaf_errors(inner)
    else:
        yield error


async def test_the_sdk_client_cannot_connect_with_a_bad_token(
    api_url: str, db: asyncpg.Connection
) -> None:
    user_id = random_user_id()
    forged = mint_hs256("another-secret-" + "y" * 40, user_id)
    for mode in MODES:
        with pytest.raises(BaseException) as raised:  # the SDK wraps its errors in groups
            async with connect(api_url, forged, mode) as client:
                await client.call_tool("add_task", {"title": "Sneaked in"})
        leaves = list(leaf_errors(raised.value))
        assert leaves and all(isinstance(e, MCPError | httpx2.HTTPStatusError) for e in leaves), (
            leaves)
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1", user_id) == 0


async def test_hostile_requests_to_the_endpoint_are_4xx_and_change_nothing(
    api_url: str, db: asyncpg.Connection
) -> None:
    """With a valid token: other methods (stateless: no stream to GET, no session to DELETE),
    bodies that are not JSON, not JSON-RPC, too large or with arguments that are no object get
    a 4xx (the API's envelope, or a JSON-RPC error from the SDK), never a 5xx, and write
    nothing."""
    user = new_user()
    headers = {**MCP_HEADERS, **user.headers}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "add_task", "arguments": "title=x"}}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as http:
        for method in ("GET", "DELETE", "PUT"):
            response = await http.request(method, "/mcp")
            assert response.status_code == 405, response.text
            assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
            assert response.headers["Allow"] == "POST"
        cases = [
            ("application/json", b"{not json", 400),
            ("application/json", b"[]", 400),
            ("text/plain", json.dumps(INITIALIZE).encode(), 415),
            ("application/json", b'{"padding": "' + b"x" * 70_000 + b'"}', 413),
        ]
        for content_type, body, status in cases:
            response = await http.post("/mcp", content=body,
                                       headers={"Content-Type": content_type})
            assert response.status_code == status, (body[:40], response.text)
        response = await http.post("/mcp", json=call)
        assert response.status_code < 500
        assert response.json()["error"]["code"] == -32602  # JSON-RPC: invalid params
    assert await rows(db, user) == []


@pytest.fixture(scope="module")
def limited_api_url(database_url: str) -> Iterator[str]:
    """A bucket of 3 requests that takes 1,000 s to refill one."""
    with running_api(database_url, BETTER_AUTH_SECRET=SECRET, RATE_LIMIT_BURST="3",
                     RATE_LIMIT_PER_SECOND="0.001") as url:
        yield url


async def test_the_rate_limit_counts_each_mcp_request_once(
    limited_api_url: str, db: asyncpg.Connection
) -> None:
    """Every POST to /mcp costs one request of the caller's bucket, a tool call included (the
    API request it runs in-process is not counted again); a listing costs one too. Over the
    limit, /mcp answers 429 with Retry-After before any tool runs: the call created nothing."""
    user = new_user()
    stats = {"name": "get_task_stats", "arguments": {}}
    add = {"name": "add_task", "arguments": {"title": "over the limit"}}
    async with httpx.AsyncClient(base_url=limited_api_url, timeout=30) as http:

        async def post(method: str, params: dict[str, object], who: User = user) -> httpx.Response:
            return await http.post("/mcp", headers={**MCP_HEADERS, **who.headers}, json={
                "jsonrpc": "2.0", "id": 1, "method": method, "params": params})

        assert (await post("tools/list", {})).status_code == 200  # request 1
        for _ in range(2):  # requests 2 and 3: each call's own API request passes too
            answer = await post("tools/call", stats)
            assert answer.status_code == 200
            assert answer.json()["result"]["isError"] is False, answer.json()
            assert answer.headers["RateLimit-Policy"] == '"per-user";q=3;w=3000'
        refused = await post("tools/call", add)  # request 4
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "TOO_MANY_REQUESTS"
        assert int(refused.headers["Retry-After"]) > 0
        assert await rows(db, user) == []
        # Another user has a bucket of their own.
        other = await post("tools/call", stats, new_user())
        assert other.json()["result"]["isError"] is False


def test_a_page_on_another_origin_is_refused(api_url: str) -> None:
    """The transport's DNS-rebinding rule with the API's CORS_ORIGINS: a browser Origin that is
    not allowed is a 403 even with a valid token; an allowed one passes."""
    token = f"Bearer {mint_hs256(SECRET, random_user_id())}"
    refused_origin = post_mcp(api_url, Authorization=token, Origin="https://evil.example")
    assert refused_origin.status_code == 403
    assert refused_origin.json()["error"]["code"] == "FORBIDDEN"
    allowed = post_mcp(api_url, Authorization=token, Origin=ALLOWED_ORIGIN)
    assert allowed.status_code == 200, allowed.text


# -- JWKS mode: the tokens of Better Auth's jwt plugin ------------------------------------------


@pytest.fixture(scope="module")
def jwks_api_url(database_url: str, jwks: JwksDocument) -> Iterator[str]:  # noqa: F811
    """`task-api serve` with only BETTER_AUTH_URL: keys from the JWKS, iss and aud required."""
    with running_api(database_url, BETTER_AUTH_URL=jwks.base_url) as url:
        yield url


@pytest.mark.parametrize("mode", MODES)
async def test_jwks_tokens_work_and_others_are_refused(
    jwks_api_url: str,
    jwks: JwksDocument,  # noqa: F811
    keys: Keys,  # noqa: F811
    db: asyncpg.Connection,
    mode: str,
) -> None:
    """As configured: an EdDSA token of the JWKS acts as its user; an HS256 one (no secret
    here) and one for another audience are refused by /mcp before any tool runs."""
    user_id = random_user_id()
    issued = claims(sub=user_id, iss=jwks.base_url, aud=jwks.base_url)
    token = keys.ed25519.sign(issued, "EdDSA")
    async with connect(jwks_api_url, token, mode) as client:
        task = ok(await client.call_tool("add_task", {"title": "Signed by Better Auth"}))
        assert task["user_id"] == user_id
        listed = ok(await client.call_tool("list_tasks", {}))
        assert [t["id"] for t in listed["data"]] == [task["id"]]
    for bad, message in (
        (mint_hs256(SECRET, user_id), "Invalid token: algorithm not allowed"),
        (keys.ed25519.sign({**issued, "aud": "https://elsewhere.example"}, "EdDSA"),
         "Invalid token: wrong audience"),
    ):
        response = post_mcp(jwks_api_url, Authorization=f"Bearer {bad}")
        assert response.status_code == 401
        assert response.json()["error"]["message"] == message
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE user_id = $1", user_id) == 1


# -- the MCP Inspector's command line (npm; the TypeScript SDK's client) --------------------------

INSPECTOR_DIR = Path(__file__).resolve().parents[2] / "clients" / "mcp-inspector"
INSPECTOR = INSPECTOR_DIR / "node_modules/.bin/mcp-inspector"
INSPECTOR_TOOL_ERROR = 5  # its exit status for a tool result with isError (EXIT_CODES.TOOL_ERROR)


def inspector(api_url: str, token: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """`mcp-inspector --cli URL --transport http --header "Authorization: Bearer ..." ARGS`, on
    the pinned Node (Inspector 2 needs Node 22.19 or later)."""
    assert INSPECTOR.exists(), "run scripts/ensure_npm.sh clients/mcp-inspector"
    auth = ["--header", f"Authorization: Bearer {token}"] if token else []
    return subprocess.run(
        [node_tools.node(), str(INSPECTOR), "--cli", f"{api_url}/mcp", "--transport", "http",
         # No OAuth dance on a 401 (it would wait for a browser): the bearer header or nothing.
         "--stored-auth-only",
         *auth, *args],
        cwd=INSPECTOR_DIR, capture_output=True, text=True, timeout=60, check=False,
    )


async def test_the_inspector_cli_lists_and_calls_the_tools(
    api_url: str, db: asyncpg.Connection
) -> None:
    """Another implementation of the protocol, as a person tries a server by hand: the same
    tools, a task added and listed as the token's user, and no connection at all without a
    token."""
    alice = new_user()
    listed = inspector(api_url, alice.token, "--method", "tools/list")
    assert listed.returncode == 0, listed.stderr
    assert [tool["name"] for tool in json.loads(listed.stdout)["tools"]] == [t.name for t in TOOLS]

    added = inspector(api_url, alice.token, "--method", "tools/call", "--tool-name", "add_task",
                      "--tool-arg", "title=Buy milk", 'tags=["home"]', "priority=high")
    assert added.returncode == 0, added.stderr
    task = json.loads(added.stdout)["structuredContent"]
    assert (task["user_id"], task["title"], task["tags"], task["priority"]) == (
        alice.id, "Buy milk", ["home"], "high")
    page = inspector(api_url, alice.token, "--method", "tools/call", "--tool-name", "list_tasks",
                     "--tool-arg", "status=pending", "tag=home")
    assert [t["id"] for t in json.loads(page.stdout)["structuredContent"]["data"]] == [task["id"]]

    anonymous = inspector(api_url, None, "--method", "tools/list")
    assert anonymous.returncode != 0
    assert "UNAUTHORIZED" in anonymous.stdout + anonymous.stderr
    assert [r["id"] for r in await rows(db, alice)] == [uuid.UUID(task["id"])]


async def test_every_tool_error_reaches_the_inspector_cli_as_a_tool_error(
    api_url: str, db: asyncpg.Connection
) -> None:
    """The TypeScript SDK's client checks structured content against a tool's output schema
    even when `isError` is true: an error sent that way became protocol error -32602 for every
    tool that returns a task. Each tool's errors, through the Inspector: a tool error (exit 5,
    `isError`) with the API's code, and nothing changed."""
    alice, bob = new_user(), new_user()
    added = inspector(api_url, alice.token, "--method", "tools/call", "--tool-name", "add_task",
                      "--tool-arg", "title=Keep me")
    task = json.loads(added.stdout)["structuredContent"]
    before = await rows(db, alice)
    unknown = str(uuid.uuid4())
    cases: list[tuple[str, str, list[str], str]] = [
        # (token, tool, arguments, code)
        (alice.token, "list_tasks", ["limit=1000"], "VALIDATION_ERROR"),
        (alice.token, "list_tasks", ["cursor=not-a-cursor"], "VALIDATION_ERROR"),
        (alice.token, "list_task_changes", ["limit=5000"], "VALIDATION_ERROR"),
        (alice.token, "list_task_changes", ["since=not-a-sync-token"], "VALIDATION_ERROR"),
        (alice.token, "add_task", ["title= "], "VALIDATION_ERROR"),
        (alice.token, "add_task", ["title=x", "priority=urgent"], "VALIDATION_ERROR"),
        (alice.token, "get_task_stats", ["verbose=true"], "VALIDATION_ERROR"),
        (alice.token, "get_task", [f"task_id={unknown}"], "NOT_FOUND"),
        (bob.token, "get_task", [f"task_id={task['id']}"], "FORBIDDEN"),
        (alice.token, "replace_task", [f"task_id={unknown}", "title=x"], "NOT_FOUND"),
        (alice.token, "replace_task", [f"task_id={task['id']}", "title= "], "VALIDATION_ERROR"),
        (alice.token, "update_task", [f"task_id={unknown}", "completed=true"], "NOT_FOUND"),
        # The CLI reads each value as JSON first: "\"9\"" is the tag "9", "9" a bare 9.
        (alice.token, "update_task", [f"task_id={task['id']}", "completed=true",
                                      'if_match="\\"9\\""'], "PRECONDITION_FAILED"),
        (alice.token, "update_task", [f"task_id={task['id']}", 'if_match="9"'], "VALIDATION_ERROR"),
        (alice.token, "delete_task", [f"task_id={unknown}"], "NOT_FOUND"),
        (bob.token, "delete_task", [f"task_id={task['id']}"], "FORBIDDEN"),
        (alice.token, "delete_task", ["task_id=stats"], "VALIDATION_ERROR"),
        (alice.token, "list_webhooks", ["verbose=true"], "VALIDATION_ERROR"),
        (alice.token, "get_webhook", [f"webhook_id={unknown}"], "NOT_FOUND"),
        (alice.token, "update_webhook", [f"webhook_id={unknown}", "enabled=false"], "NOT_FOUND"),
        (alice.token, "update_webhook", [f"webhook_id={unknown}", "url=ftp://x"],
         "VALIDATION_ERROR"),
        (alice.token, "delete_webhook", [f"webhook_id={unknown}"], "NOT_FOUND"),
        (alice.token, "list_webhook_deliveries", [f"webhook_id={unknown}", "limit=0"],
         "VALIDATION_ERROR"),
        (alice.token, "redeliver_webhook", [f"webhook_id={unknown}", f"delivery_id={unknown}"],
         "NOT_FOUND"),
    ]
    assert {tool for _, tool, _, _ in cases} == {t.name for t in TOOLS}
    for token, tool, arguments, code in cases:
        called = inspector(api_url, token, "--method", "tools/call", "--tool-name", tool,
                           "--tool-arg", *arguments)
        # Inspector 2 exits 5 for a tool's own error (`isError`), and with another code for a
        # protocol error such as -32602.
        assert called.returncode == INSPECTOR_TOOL_ERROR, (tool, arguments,
                                                          called.stdout + called.stderr)
        assert json.loads(called.stderr)["error"]["code"] == "tool_is_error"
        result = json.loads(called.stdout)
        assert result["isError"] is True, (tool, result)
        assert "structuredContent" not in result, (tool, result)
        error_in([block["text"] for block in result["content"]], code)
    assert await rows(db, alice) == before


async def test_an_assistant_asks_what_changed_since_it_last_looked(api_url: str) -> None:
    """list_task_changes returns the envelope (the sync token is in its meta), and the token
    passed back gives only what changed since, tombstones included."""
    user = new_user()
    async with connect(api_url, user.token, "auto") as client:
        first = ok(await client.call_tool("add_task", {"title": "Kept"}))
        gone = ok(await client.call_tool("add_task", {"title": "Dropped"}))
        synced = ok(await client.call_tool("list_task_changes", {}))
        assert sorted(t["title"] for t in synced["data"]["tasks"]) == ["Dropped", "Kept"]
        assert synced["meta"]["has_more"] is False
        ok(await client.call_tool("update_task", {"task_id": first["id"], "completed": True}))
        assert (await client.call_tool("delete_task", {"task_id": gone["id"]})).is_error is False
        later = ok(await client.call_tool(
            "list_task_changes", {"since": synced["meta"]["sync_token"]}))
    assert [(t["id"], t["completed"]) for t in later["data"]["tasks"]] == [(first["id"], True)]
    assert [d["id"] for d in later["data"]["deleted"]] == [gone["id"]]


@pytest.mark.parametrize("mode", MODES)
async def test_an_assistant_sets_a_recurring_task_with_a_reminder(
    api_url: str, db: asyncpg.Connection, mode: str
) -> None:
    """"Remind me every Monday at 9 to water the plants": the tools carry recurrence, time zone
    and reminders from the contract (no tool code names them); a bad rule is a tool error that
    names the part."""
    alice = new_user()
    async with connect(api_url, alice.token, mode) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        properties = listed["add_task"].input_schema["properties"]
        assert {"recurrence", "time_zone", "reminders"} <= set(properties)
        plants = ok(await client.call_tool("add_task", {
            "title": "Water the plants", "due_date": "2027-03-01T09:00:00+01:00",
            "time_zone": "Europe/Berlin", "recurrence": "FREQ=WEEKLY;BYDAY=MO",
            "reminders": [{"minutes_before": 0}],
        }))
        assert plants["recurrence"] == "FREQ=WEEKLY;BYDAY=MO"
        assert plants["reminders"] == [{"minutes_before": 0}]
        done = ok(await client.call_tool("update_task", {"task_id": plants["id"],
                                                         "completed": True}))
        following = ok(await client.call_tool("get_task", {"task_id": done["next_occurrence_id"]}))
        assert following["due_date"] == "2027-03-08T08:00:00+00:00"
        error = refused(await client.call_tool("add_task", {
            "title": "x", "due_date": "2027-03-01T09:00:00Z", "time_zone": "UTC",
            "recurrence": "FREQ=HOURLY"}), "VALIDATION_ERROR")
        assert error["details"][0]["field"] == "body.recurrence"
    assert len(await rows(db, alice)) == 2
