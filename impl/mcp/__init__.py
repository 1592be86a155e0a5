"""The MCP server: the contract's task operations as tools for AI assistants, at `/mcp`.

`tools.py` turns a tool call into the operation's HTTP request and runs it through this same
app in-process, so auth, validation, rate limit, idempotency and isolation are the API's own;
`endpoint.py` serves the Model Context Protocol (the `mcp` SDK, streamable HTTP) behind the
API's bearer check. The tools themselves are generated from openapi.yaml (generated/mcp_tools.py).
"""

from impl.mcp.endpoint import MCP_PATH, install_mcp

__all__ = ["MCP_PATH", "install_mcp"]
