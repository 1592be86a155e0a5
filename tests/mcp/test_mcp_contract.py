"""Drift guard for the MCP tools (generated/mcp_tools.py, served at /mcp): they are the
contract's operations, derived here again from openapi.yaml on its own terms (names, arguments,
required ones, descriptions, constraints), and a change of the contract shows up in them after
scripts/regen.sh. tests/mcp/test_mcp.py checks that the live server lists exactly these tools."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from generated.mcp_tools import TOOLS, ToolOperation
from tests.contract.test_contract_drift import CONTRACT, _regen_sandbox, resolve

METHODS = ("get", "put", "post", "delete", "patch")
# The list: list, create, get, replace, update, delete, stats.
# Every secured operation but the event stream (`x-mcp-tool: false`: not a tool to call).
TASK_TOOLS = {
    "list_tasks", "add_task", "get_task", "replace_task", "update_task", "delete_task",
    "get_task_stats", "list_task_changes",
}
# createWebhook and rotateWebhookSecret are no tools (x-mcp-tool: false): they answer with the
# signing secret, which belongs in the user's backend, not in an assistant's transcript.
WEBHOOK_TOOLS = {
    "list_webhooks", "get_webhook", "update_webhook", "delete_webhook", "list_webhook_deliveries",
    "redeliver_webhook",
}


def snake(name: str) -> str:
    name = re.sub(r"[^0-9A-Za-z]+", "_", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).strip("_").lower()


def words(text: str) -> str:
    return " ".join(text.split())


def secured_operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], list[Any]]]:
    """(path, method, operation, shared parameters) of every operation that needs a token."""
    result = []
    for path, item in doc["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation is not None and operation.get("security", doc.get("security")):
                result.append((path, method, operation, item.get("parameters", [])))
    return result


def expected_tools(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the contract says each tool is, independently of the visitor's code."""
    expected = {}
    for path, method, operation, shared in secured_operations(doc):
        if operation.get("x-mcp-tool") is False:  # the contract says: not a tool
            continue
        params = [resolve(doc, p) for p in [*shared, *operation.get("parameters", [])]]
        arguments = {snake(p["name"]): (p["in"], p["name"], p) for p in params}
        required = [snake(p["name"]) for p in params if p.get("required")]
        if "requestBody" in operation:
            body = resolve(doc, operation["requestBody"])["content"]["application/json"]
            schema = resolve(doc, body["schema"])
            for field, field_schema in schema["properties"].items():
                arguments[field] = ("body", field, field_schema)
            required += schema.get("required", [])
        name = operation.get("x-mcp-tool", snake(operation["operationId"]))
        expected[name] = {
            "operation_id": operation["operationId"],
            "method": method.upper(),
            "path": path,
            "summary": operation["summary"],
            "description": operation.get("description", ""),
            "arguments": arguments,
            "required": required,
        }
    return expected


def test_the_tools_are_the_task_operations() -> None:
    """One tool per operation that acts as the caller, none for the public probes; createTask
    is `add_task` through the contract's x-mcp-tool."""
    doc = yaml.safe_load(CONTRACT.read_text())
    assert {tool.name for tool in TOOLS} == TASK_TOOLS | WEBHOOK_TOOLS
    assert {tool.name for tool in TOOLS} == set(expected_tools(doc))
    probes = {op["operationId"] for item in doc["paths"].values() for op in item.values()
              if isinstance(op, dict) and op.get("security") == []}
    assert probes == {"getHealth", "getReadiness"}
    assert not probes & {tool.operation_id for tool in TOOLS}


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool.name)
def test_each_tool_matches_its_operation(tool: ToolOperation) -> None:
    """Operation, method, path; every parameter and body field as an argument, where the
    contract puts it, required as the contract says, described and constrained as the
    contract describes and constrains it; no argument the contract does not have."""
    doc = yaml.safe_load(CONTRACT.read_text())
    want = expected_tools(doc)[tool.name]
    assert (tool.operation_id, tool.method, tool.path) == (
        want["operation_id"], want["method"], want["path"]
    )
    assert tool.title == want["summary"]
    assert words(tool.description).startswith(words(want["summary"]))
    assert words(want["description"]) in words(tool.description)
    schema = tool.input_schema
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert list(schema["properties"]) == list(want["arguments"])
    assert sorted(schema.get("required", [])) == sorted(want["required"])
    assert [(a.name, a.location, a.wire_name) for a in tool.arguments] == [
        (name, location, wire) for name, (location, wire, _) in want["arguments"].items()
    ]
    for name, (location, _, source) in want["arguments"].items():
        prop = schema["properties"][name]
        contract_schema = resolve(doc, source["schema"] if location != "body" else source)
        if "description" in source:
            assert words(prop["description"]) == words(source["description"]), name
        for keyword in ("type", "enum", "minLength", "maxLength", "pattern", "minimum",
                        "maximum", "maxItems", "format", "default"):
            if keyword in contract_schema:
                assert prop[keyword] == contract_schema[keyword], (name, keyword)
        if "example" in source:
            assert prop["examples"] == [source["example"]], name


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool.name)
def test_input_schemas_are_json_schema_and_take_the_contract_examples(
    tool: ToolOperation,
) -> None:
    """Each input schema is valid JSON Schema (2020-12, MCP's dialect) with no $ref left, and
    the contract's own examples of the operation's parameters and body are valid arguments."""
    jsonschema.Draft202012Validator.check_schema(tool.input_schema)
    assert "$ref" not in repr(tool.input_schema)
    if tool.output_schema is not None:
        jsonschema.Draft202012Validator.check_schema(tool.output_schema)
    validator = jsonschema.Draft202012Validator(tool.input_schema)
    example_args = {
        name: prop["examples"][0]
        for name, prop in tool.input_schema["properties"].items()
        if prop.get("examples") and tool.arguments[[a.name for a in tool.arguments].index(name)]
        .location != "body"
    }
    bodies = [yaml.safe_load(e) for e in re.findall(r"Example arguments: (\{.*\})", tool.description)]
    assert bool(bodies) == any(a.location == "body" for a in tool.arguments)
    for body in bodies or [{}]:
        validator.validate({**example_args, **body})


def test_the_schemas_refuse_what_the_contract_refuses() -> None:
    """The constraints reach the assistant: a blank title, an unknown priority, an unknown
    argument and a missing required one are invalid against add_task's schema."""
    (add_task,) = [tool for tool in TOOLS if tool.name == "add_task"]
    validator = jsonschema.Draft202012Validator(add_task.input_schema)
    assert validator.is_valid({"title": "Buy milk", "priority": "high", "tags": ["home"]})
    for bad in ({"title": " "}, {"title": "x", "priority": "urgent"}, {"title": "x", "owner": 1},
                {"priority": "low"}, {"title": "x", "tags": ["a"] * 11}):
        assert not validator.is_valid(bad), bad


# -- after regen --------------------------------------------------------------------------------


def _load_tools(root: Path) -> dict[str, Any]:
    path = root / "generated" / "mcp_tools.py"
    spec = importlib.util.spec_from_file_location("sandbox_mcp_tools", path)
    assert spec and spec.loader
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while they are built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return {tool.name: tool for tool in module.TOOLS}


def _regen(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/regen.sh"], cwd=root, check=False, capture_output=True, text=True,
        timeout=300,
    )


def test_a_contract_change_shows_up_in_the_tools_after_regen(tmp_path: Path) -> None:
    """Edit the contract (a new list filter, a new body field, another x-mcp-tool name, one
    operation less), run regen: the tools follow, with nothing written by hand."""
    root = _regen_sandbox(tmp_path)
    doc = yaml.safe_load((root / "openapi.yaml").read_text())
    doc["paths"]["/api/tasks"]["get"]["parameters"].append({
        "name": "overdue_only", "in": "query", "required": False,
        "description": "Only tasks whose due date has passed.", "schema": {"type": "boolean"},
    })
    doc["components"]["schemas"]["TaskPatch"]["properties"]["notes"] = {
        "type": "string", "maxLength": 500, "description": "Anything worth remembering.",
    }
    doc["paths"]["/api/tasks"]["post"]["x-mcp-tool"] = "create_todo"
    del doc["paths"]["/api/tasks/{task_id}"]["delete"]
    (root / "openapi.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    before = _load_tools(root)
    assert "delete_task" in before and "overdue_only" not in before["list_tasks"].input_schema[
        "properties"]

    result = _regen(root)
    assert result.returncode == 0, result.stderr
    after = _load_tools(root)
    assert set(after) == (TASK_TOOLS | WEBHOOK_TOOLS) - {"delete_task", "add_task"} | {
        "create_todo"}
    overdue = after["list_tasks"].input_schema["properties"]["overdue_only"]
    assert overdue == {"type": "boolean", "description": "Only tasks whose due date has passed."}
    assert ("overdue_only", "query", "overdue_only") in [
        (a.name, a.location, a.wire_name) for a in after["list_tasks"].arguments
    ]
    notes = after["update_task"].input_schema["properties"]["notes"]
    assert notes["maxLength"] == 500
    assert "notes" not in after["replace_task"].input_schema["properties"]  # TaskWrite unchanged


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            # A query parameter named like a body field: a flat argument list would be ambiguous.
            lambda doc: doc["paths"]["/api/tasks/{task_id}"]["patch"]["parameters"].append(
                {"name": "title", "in": "query", "schema": {"type": "string", "maxLength": 9}}
            ),
            "body field 'title' cannot be a flat tool argument",
        ),
        (
            lambda doc: doc["paths"]["/api/tasks"]["post"].update({"x-mcp-tool": "add task!"}),
            "x-mcp-tool 'add task!' is not an MCP tool name",
        ),
        (
            lambda doc: doc["paths"]["/api/tasks"]["post"].update({"x-mcp-tool": "list_tasks"}),
            "MCP tool names used twice: ['list_tasks']",
        ),
    ],
)
def test_regen_refuses_tools_it_cannot_name_or_lay_out(
    tmp_path: Path, edit: Any, message: str
) -> None:
    root = _regen_sandbox(tmp_path)
    doc = yaml.safe_load((root / "openapi.yaml").read_text())
    edit(doc)
    (root / "openapi.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    before = (root / "generated" / "mcp_tools.py").read_text()
    result = _regen(root)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert (root / "generated" / "mcp_tools.py").read_text() == before
