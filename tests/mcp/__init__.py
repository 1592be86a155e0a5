"""Tests of impl/mcp/: the MCP endpoint over real HTTP, and its tools against the contract."""
