"""A tool call -> the operation's HTTP request, run through the app in-process -> the result.

Each argument goes where the contract puts it (generated/mcp_tools.py: path, query, header or
body); the caller's own Authorization header goes along. The request then crosses the app's
whole stack, middleware included, exactly like one that came over the network: nothing here
validates a value or decides anything a handler decides. What comes back becomes the tool's
result: the envelope's `data` (or `{data, meta}` for a listing, whose cursor is in `meta`), and
an error envelope becomes a tool error with its code and message (`_tool_error`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import mcp_types as types
import orjson
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Scope

from generated.mcp_tools import ToolOperation
from impl.http.auth import ALREADY_COUNTED


def _text(value: Any) -> str:
    """An argument as a query, path or header value: JSON's spelling for anything but a string
    (true, 20, 1.5); a list or object is passed as its JSON text, which the API then refuses."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _refused(field: str, message: str) -> types.CallToolResult:
    """An argument that cannot even be placed in a request (a missing path parameter, an unknown
    argument, a path value that would name another resource): the API's 422 shape."""
    error = {
        "code": "VALIDATION_ERROR",
        "message": "Tool arguments are invalid",
        "details": [{"field": field, "message": message, "type": "tool_argument"}],
    }
    return _tool_error({"error": error})


def _tool_error(envelope: Mapping[str, Any]) -> types.CallToolResult:
    """A tool error (`isError: true`) as text only: `CODE: message` and a line per invalid field
    for the assistant, then the API's error envelope as JSON text for a program.

    Never as structured content. The specification says structured content MUST conform to the
    tool's output schema when one is declared, and it makes no exception for errors; the
    TypeScript SDK's client (1.32) validates it even when `isError` is true, so an envelope there
    turned every error of a tool with an output schema (a Task) into protocol error -32602.
    Both SDKs accept an error result without structured content (the TypeScript client requires
    it only when `isError` is false, the Python client validates only successes), so every tool
    answers its errors the same way whether or not it declares an output schema.
    """
    error = envelope["error"]
    return types.CallToolResult(
        content=[
            types.TextContent(text=_error_text(error)),
            types.TextContent(text=orjson.dumps(envelope).decode()),
        ],
        is_error=True,
    )


def _error_text(error: Mapping[str, Any]) -> str:
    lines = [f"{error.get('code')}: {error.get('message')}"]
    for detail in error.get("details") or []:
        lines.append(f"- {detail.get('field')}: {detail.get('message')}")
    return "\n".join(lines)


def _routes_only_to(routes: list[BaseRoute], path: str, template: str) -> bool:
    """Whether the path is one of the operation's own paths and no other route's: a path
    parameter such as task_id = "stats" must not turn get_task into GET /api/tasks/stats."""
    matching = {r.path for r in routes if isinstance(r, Route) and r.path_regex.match(path)}
    return matching == {template}


async def _run(app: ASGIApp, scope: Scope, body: bytes) -> tuple[int, bytes]:
    """One request through the ASGI app; the status and the body it answered."""
    status = 500
    chunks: list[bytes] = []
    done = anyio.Event()
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # like a client that stays connected until the answer is complete
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    return status, b"".join(chunks)


async def call_tool(
    app: ASGIApp,
    routes: list[BaseRoute],
    tool: ToolOperation,
    arguments: Mapping[str, Any],
    caller: Scope,
) -> types.CallToolResult:
    """Run one tool call as the caller (whose HTTP request to /mcp is `caller`)."""
    known = {argument.name for argument in tool.arguments}
    unknown = sorted(set(arguments) - known)
    if unknown:
        return _refused(unknown[0], f"Unknown argument; this tool takes {', '.join(sorted(known))}")
    path, raw_path = tool.path, tool.path
    query: list[tuple[str, str]] = []
    headers: list[tuple[bytes, bytes]] = [
        (name, value) for name, value in caller["headers"] if name in (b"authorization", b"host")
    ]
    headers.append((b"accept", b"application/json"))
    body: dict[str, Any] = {}
    has_body = any(argument.location == "body" for argument in tool.arguments)
    for argument in tool.arguments:
        value = arguments.get(argument.name)
        if argument.location == "body":
            if argument.name in arguments:
                body[argument.wire_name] = value
            continue
        if value is None:  # absent, or null: the parameter is not sent
            if argument.location == "path":
                return _refused(f"path.{argument.wire_name}", "Field required")
            continue
        text = _text(value)
        if argument.location == "path":
            placeholder = "{" + argument.wire_name + "}"
            path = path.replace(placeholder, text)
            raw_path = raw_path.replace(placeholder, quote(text, safe=""))
        elif argument.location == "query":
            query.append((argument.wire_name, text))
        else:
            headers.append((argument.wire_name.lower().encode("latin-1"), text.encode()))
    if path != tool.path and not _routes_only_to(routes, path, tool.path):
        where = next(a.wire_name for a in tool.arguments if a.location == "path")
        return _refused(f"path.{where}", f"Not a valid {where}: it would name another resource")
    content = orjson.dumps(body) if has_body else b""
    if has_body:
        headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(content)).encode()))
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": tool.method,
        "scheme": caller.get("scheme", "http"),
        "server": caller.get("server"),
        "client": caller.get("client"),
        "root_path": "",
        "path": path,
        "raw_path": raw_path.encode(),
        "query_string": urlencode(query).encode(),
        "headers": headers,
        # The app's lifespan state, as the caller's request got it: what the operation uses.
        "state": dict(caller.get("state") or {}),
        # The POST to /mcp that carries this call took from the caller's rate limit already.
        ALREADY_COUNTED: True,
    }
    status, answer = await _run(app, scope, content)
    return _result(tool, status, answer)


def _result(tool: ToolOperation, status: int, answer: bytes) -> types.CallToolResult:
    try:
        envelope = orjson.loads(answer) if answer else None
    except orjson.JSONDecodeError:
        envelope = None
    if 200 <= status < 300:
        if tool.result == "none" or not isinstance(envelope, dict):
            return types.CallToolResult(content=[types.TextContent(text=tool.result_description)])
        structured = envelope["data"] if tool.result == "data" else envelope
        return types.CallToolResult(
            content=[types.TextContent(text=orjson.dumps(structured).decode())],
            structured_content=structured,
        )
    if isinstance(envelope, dict) and isinstance(envelope.get("error"), dict):
        return _tool_error(envelope)
    # Never expected: every error of the API is an envelope.
    return _tool_error(
        {"error": {"code": "INTERNAL_ERROR", "message": f"Unexpected answer: HTTP {status}"}}
    )
