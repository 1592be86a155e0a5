"""`/mcp`: the Model Context Protocol over streamable HTTP (the `mcp` SDK), inside the API's app.

Stateless, with JSON responses: every POST stands alone (no session to keep, so any replica
behind a load balancer can answer any request, as for the REST API) and is answered with one
JSON body (no server-sent events: a tool call is one request and one answer). Clients of the
2025 protocol (initialize, then requests) and of the 2026-07-28 one (self-contained requests)
are both served.

The endpoint refuses what the API refuses before the SDK sees it: a request without a valid
bearer token is a 401 envelope with `WWW-Authenticate`, through the API's own `authenticate`
(so it also counts against the caller's rate limit, per user or per address), and a browser
`Origin` not in CORS_ORIGINS is a 403 (the transport's DNS-rebinding rule).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.metadata import version
from typing import Any

import mcp_types as types
from fastapi import FastAPI
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from generated.mcp_tools import TOOLS
from impl.http.auth import authenticate
from impl.http.errors import ApiError, api_error, error_response
from impl.mcp.tools import call_tool
from impl.platform.errors import DomainError, Forbidden

MCP_PATH = "/mcp"


def _listing() -> types.ListToolsResult:
    return types.ListToolsResult(
        tools=[
            types.Tool(
                name=tool.name,
                title=tool.title,
                description=tool.description,
                input_schema=tool.input_schema,
                output_schema=tool.output_schema,
                annotations=types.ToolAnnotations(
                    title=tool.title,
                    read_only_hint=tool.read_only,
                    destructive_hint=tool.destructive,
                    idempotent_hint=tool.idempotent,
                    open_world_hint=False,
                ),
            )
            for tool in TOOLS
        ]
    )


def build_server(app: FastAPI) -> Server[Any]:
    """The SDK's low-level server with the generated tools; each call runs through `app`."""
    listing = _listing()
    by_name = {tool.name: tool for tool in TOOLS}

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return listing

    async def on_call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        tool = by_name.get(params.name)
        if tool is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        request = ctx.request  # the HTTP request to /mcp that carried this call
        if not isinstance(request, Request):
            raise MCPError(types.INTERNAL_ERROR, "tools are served over HTTP only")
        return await call_tool(app, app.router.routes, tool, params.arguments or {}, request.scope)

    server: Server[Any] = Server(
        "task-api",
        version=version("task-api"),
        title="Task API",
        instructions=(
            "Tools for the caller's own tasks (the user of the bearer token), generated from the "
            "Task API's OpenAPI contract. Results are the API's data; errors carry its code."
        ),
        on_list_tools=list_tools,
        on_call_tool=on_call_tool,
        # A tool's input schema without running tools/list (the 2026-07-28 transport checks
        # Mcp-Param headers against it).
        get_tool_input_schema=lambda name: by_name[name].input_schema if name in by_name else None,
    )
    server.middleware.clear()  # no OpenTelemetry span per message: the API has telemetry off
    return server


class BearerGate:
    """The API's own checks in front of the MCP transport: Origin, then the bearer token."""

    def __init__(self, app: ASGIApp, allowed_origins: list[str]) -> None:
        self.app = app
        self.allowed_origins = set(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        origin = request.headers.get("origin")
        try:
            if origin is not None and not self.allowed_origins & {"*", origin}:
                raise Forbidden("Origin not allowed: set CORS_ORIGINS to call /mcp from a page")
            await authenticate(request)
        except ApiError as error:
            await error_response(error)(scope, receive, send)
            return
        except DomainError as error:  # a refused token, the app not started, a foreign origin
            await error_response(api_error(error))(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install_mcp(app: FastAPI, allowed_origins: list[str]) -> None:
    """Serve the MCP endpoint at MCP_PATH and run its session manager with the app."""
    manager = StreamableHTTPSessionManager(app=build_server(app), json_response=True, stateless=True)
    endpoint = BearerGate(StreamableHTTPASGIApp(manager), allowed_origins)
    # POST only: stateless, there is no stream for a GET to open (it would stay open, idle) and
    # no session for a DELETE to end; the spec's answer to both is a 405.
    app.router.routes.append(Route(MCP_PATH, endpoint=endpoint, methods=["POST"]))
    inner: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with inner(app) as state, manager.run():
            yield state

    app.router.lifespan_context = lifespan
