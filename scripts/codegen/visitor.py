"""fastapi-code-generator visitor: turns the raw contract into the route stubs' template variables.

Why our own visitor: the stock generator ignores global security, drops operationId, the
constraints of query and header parameters (with --use-annotated) and mangles header names. Here
every stub is computed from the raw OpenAPI document (`parser.raw_obj`), so what the contract says
is what the route does. Anything the stubs cannot express stops regen with a clear message
instead of being silently dropped.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

SUPPORTED_METHODS = ("get", "put", "post", "delete", "patch")
PARAM_LOCATIONS = {"path": "Path", "query": "Query", "header": "Header"}
# Keywords a parameter schema may carry and how each becomes a FastAPI constraint (None: no
# constraint, only documentation or handled elsewhere).
PARAM_SCHEMA_KEYWORDS = {
    "type": None,
    "format": None,
    "default": None,
    "description": None,
    "example": None,
    "examples": None,
    "$ref": None,
    "minLength": "min_length",
    "maxLength": "max_length",
    "pattern": "pattern",
    "minimum": "ge",
    "maximum": "le",
    "exclusiveMinimum": "gt",
    "exclusiveMaximum": "lt",
}
PARAM_KEYWORDS = {"name", "in", "required", "description", "schema", "example", "examples"}
# Request-body schema keywords the model generator drops for Pydantic v2: refuse them.
UNSUPPORTED_BODY_KEYWORDS = {
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "patternProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "if",
    "then",
    "else",
    "not",
    "contains",
    "unevaluatedProperties",
    "unevaluatedItems",
}
OPERATION_KEYWORDS = {
    "tags",
    "operationId",
    "summary",
    "description",
    "parameters",
    "requestBody",
    "responses",
    "security",
    "x-mcp-tool",
}
RESERVED_ARGUMENTS = {"principal", "body"}


class ContractError(Exception):
    """The contract uses something the generated stubs cannot express."""


def snake(name: str) -> str:
    name = re.sub(r"[^0-9A-Za-z]+", "_", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return name.strip("_").lower()


class Contract:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.schemas: dict[str, Any] = raw.get("components", {}).get("schemas", {})
        self.models: set[str] = set()

    def resolve(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        while "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ContractError(f"{where}: only local $refs are supported, got {ref}")
            target: Any = self.raw
            for part in ref[2:].split("/"):
                target = target[part]
            node = target
        return node

    def ref_name(self, node: dict[str, Any]) -> str | None:
        ref = node.get("$ref")
        if ref and ref.startswith("#/components/schemas/"):
            return str(ref.rsplit("/", 1)[1])
        return None

    # -- parameters ---------------------------------------------------------------------------

    def param_type(self, schema: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
        unknown = set(schema) - set(PARAM_SCHEMA_KEYWORDS)
        if unknown:
            raise ContractError(f"{where}: schema keywords {sorted(unknown)} are not supported")
        name = self.ref_name(schema)
        if name:
            target = self.schemas[name]
            if "enum" not in target or target.get("type") != "string":
                raise ContractError(f"{where}: a $ref parameter schema must be a string enum")
            self.models.add(name)
            return name, {}
        constraints = {
            PARAM_SCHEMA_KEYWORDS[key]: value
            for key, value in schema.items()
            if PARAM_SCHEMA_KEYWORDS.get(key)
        }
        kind, fmt = schema.get("type"), schema.get("format")
        if kind == "string" and fmt == "uuid":
            return "UUID", {}
        if kind == "string" and fmt == "date-time":
            # Pydantic's datetime would also take a Unix timestamp ("0.5"): the contract must
            # spell the accepted text out with a pattern; the handler parses the string.
            if "pattern" not in schema:
                raise ContractError(f"{where}: a date-time parameter needs an RFC 3339 pattern")
            return "str", constraints
        if kind == "string" and fmt is None:
            return "str", constraints
        if kind == "integer" and fmt in (None, "int32", "int64"):
            # The width is documentation for clients; minimum and maximum are the constraints.
            return "int", constraints
        if kind == "boolean":
            return "bool", {}
        raise ContractError(f"{where}: parameter type {kind!r} format {fmt!r} is not supported")

    def default_literal(self, type_name: str, value: Any) -> str:
        if type_name in self.schemas:
            return f"{type_name}({value!r})"
        return repr(value)

    def parameter(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        param = self.resolve(raw, where)
        unknown = set(param) - PARAM_KEYWORDS
        if unknown:
            raise ContractError(f"{where}: parameter keywords {sorted(unknown)} are not supported")
        location = param["in"]
        if location not in PARAM_LOCATIONS:
            raise ContractError(f"{where}: parameters in {location!r} are not supported")
        where = f"{where} {location} parameter {param['name']!r}"
        type_name, constraints = self.param_type(param["schema"], where)
        arg = snake(param["name"])
        if arg in RESERVED_ARGUMENTS:
            raise ContractError(f"{where}: the name {arg!r} is reserved by the stubs")
        if arg != param["name"] or location == "header":
            constraints = {"alias": param["name"], **constraints}
        marker = PARAM_LOCATIONS[location]
        options = ", ".join(f"{key}={value!r}" for key, value in constraints.items())
        required = bool(param.get("required", False))
        default_value = self.resolve(param["schema"], where).get("default")
        if required:
            annotation, default = type_name, None
        elif default_value is not None:
            annotation, default = type_name, self.default_literal(type_name, default_value)
        else:
            annotation, default = f"Optional[{type_name}]", "None"
        return {
            "name": arg,
            "location": location,
            "required": required,
            "signature": f"{arg}: Annotated[{annotation}, {marker}({options})]"
            + (f" = {default}" if default else ""),
        }

    # -- bodies and responses -----------------------------------------------------------------

    def check_body_schema(self, schema: Any, where: str, seen: set[str]) -> None:
        if isinstance(schema, dict):
            name = self.ref_name(schema)
            if name:
                if name not in seen:
                    seen.add(name)
                    self.check_body_schema(self.schemas[name], f"{where} -> {name}", seen)
                return
            dropped = UNSUPPORTED_BODY_KEYWORDS & set(schema)
            if dropped:
                raise ContractError(
                    f"{where}: {sorted(dropped)} would be dropped by the model generator"
                )
            for key, value in schema.items():
                if key not in ("example", "examples", "default", "enum"):
                    self.check_body_schema(value, f"{where}/{key}", seen)
        elif isinstance(schema, list):
            for index, item in enumerate(schema):
                self.check_body_schema(item, f"{where}[{index}]", seen)

    def request_body(self, raw: dict[str, Any], where: str) -> str:
        body = self.resolve(raw, where)
        content = body.get("content", {})
        if set(content) != {"application/json"}:
            raise ContractError(f"{where}: request bodies must be application/json only")
        if not body.get("required", False):
            raise ContractError(f"{where}: optional request bodies are not supported")
        schema = content["application/json"]["schema"]
        name = self.ref_name(schema)
        if not name:
            raise ContractError(f"{where}: the request body schema must be a $ref to a model")
        self.check_body_schema(schema, f"{where} body", set())
        self.models.add(name)
        return name

    def responses(self, raw: dict[str, Any], where: str) -> tuple[int, dict[str, str]]:
        statuses: dict[str, str] = {}
        for status, response in raw.items():
            response = self.resolve(response, f"{where} response {status}")
            content = response.get("content", {})
            if str(status).startswith("2") and set(content) == {"text/event-stream"}:
                # A stream: the handler writes the events (impl/http/sse.py); no model.
                statuses[str(status)] = ""
                continue
            if set(content) - {"application/json"}:
                raise ContractError(
                    f"{where} response {status}: only application/json bodies "
                    "(or text/event-stream alone, for a 2xx stream)"
                )
            model = self.ref_name(content["application/json"]["schema"]) if content else None
            if content and not model:
                raise ContractError(f"{where} response {status}: the schema must be a $ref")
            if model:
                self.models.add(model)
            statuses[str(status)] = model or ""
        success = sorted(int(s) for s in statuses if s.startswith("2"))
        if len(success) != 1:
            raise ContractError(f"{where}: exactly one 2xx response is supported, got {success}")
        return success[0], statuses

    def secured(self, operation: dict[str, Any], where: str) -> bool:
        requirements = operation.get("security", self.raw.get("security", []))
        if not requirements:
            return False
        schemes = self.raw.get("components", {}).get("securitySchemes", {})
        if len(requirements) != 1 or len(requirements[0]) != 1:
            raise ContractError(f"{where}: exactly one security requirement is supported")
        (scheme_name,) = requirements[0]
        scheme = schemes[scheme_name]
        if scheme.get("type") != "http" or scheme.get("scheme") != "bearer":
            raise ContractError(f"{where}: only http bearer security is supported")
        return True

    # -- operations ---------------------------------------------------------------------------

    def operations(self) -> list[dict[str, Any]]:
        result = []
        for path, item in self.raw["paths"].items():
            shared = item.get("parameters", [])
            for method, operation in item.items():
                if method in ("parameters", "summary", "description"):
                    continue
                where = f"{method.upper()} {path}"
                if method not in SUPPORTED_METHODS:
                    raise ContractError(f"{where}: method {method!r} is not supported")
                unknown = set(operation) - OPERATION_KEYWORDS
                if unknown:
                    raise ContractError(f"{where}: {sorted(unknown)} are not supported")
                if "operationId" not in operation or len(operation.get("tags", [])) != 1:
                    raise ContractError(f"{where}: needs an operationId and exactly one tag")
                params = [self.parameter(p, where) for p in [*shared, *operation.get("parameters", [])]]
                body = (
                    self.request_body(operation["requestBody"], where)
                    if "requestBody" in operation
                    else None
                )
                status_code, responses = self.responses(operation["responses"], where)
                tag = operation["tags"][0]
                result.append(
                    {
                        "method": method,
                        "path": path,
                        "operation_id": operation["operationId"],
                        "function_name": snake(operation["operationId"]),
                        "module": f"{snake(tag)}.handlers",  # impl/<tag>/handlers.py
                        "tag": tag,
                        "summary": operation.get("summary", ""),
                        "description": operation.get("description", ""),
                        "status_code": status_code,
                        "responses": responses,
                        "secured": self.secured(operation, where),
                        # Required first: Python wants defaults after non-defaults.
                        "params": sorted(params, key=lambda p: not p["required"]),
                        "body": body,
                    }
                )
        return result


# -- MCP tools --------------------------------------------------------------------------------

# What MCP allows in a tool name (spec 2025-11-25, "Tool names").
MCP_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
# OpenAPI-only keywords that JSON Schema (an MCP tool's inputSchema) does not know.
OPENAPI_ONLY = {"example", "discriminator", "xml", "externalDocs"}


def unwrap(text: str) -> str:
    """Markdown's soft line breaks joined: the contract's text wrapped at 100 columns reads as
    paragraphs (list items keep their own lines)."""
    lines = text.strip().splitlines()
    out: list[str] = []
    for line in lines:
        line = line.strip()
        if out and line and out[-1] and not line.startswith("- "):
            out[-1] += " " + line
        else:
            out.append(line)
    return "\n".join(out)


class McpTools:
    """The contract's operations as MCP tools (generated/mcp_tools.py, served by impl/mcp).

    Every operation that needs the caller's bearer token is a tool: it acts as that user. Its name
    is the operation's `x-mcp-tool` when the contract gives one, else the operationId in snake
    case; its title and description are the operation's summary and description, with the
    request body's examples. Its input is one flat object: the path, query and header
    parameters (header names in snake case: `If-Match` -> `if_match`) beside the body's fields,
    each with its description, constraints and example from the contract. Flat, because an
    assistant fills `{"task_id": ..., "completed": true}` more reliably than a nested `body`;
    a body field named like a parameter of the same operation would make that ambiguous, and
    stops regen.
    """

    def __init__(self, contract: Contract) -> None:
        self.contract = contract

    def inline(self, node: Any, where: str) -> Any:
        """A JSON Schema without $refs (each replaced by its target) or OpenAPI-only keywords
        (`example` becomes `examples`); `x-` extensions dropped."""
        if isinstance(node, list):
            return [self.inline(item, where) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            target = self.inline(self.contract.resolve({"$ref": node["$ref"]}, where), where)
            return {**target, **self.inline(siblings, where)}
        result: dict[str, Any] = {}
        for key, value in node.items():
            if key.startswith("x-") or key in OPENAPI_ONLY:
                continue
            if key in ("enum", "default", "examples", "const"):
                result[key] = value
            elif key == "properties":
                result[key] = {name: self.inline(v, where) for name, v in value.items()}
            else:
                result[key] = self.inline(value, where)
        if "example" in node and "examples" not in node:
            result["examples"] = [node["example"]]
        return result

    def body_examples(self, body: dict[str, Any]) -> list[Any]:
        examples = body.get("content", {}).get("application/json", {}).get("examples", {})
        return [self.contract.resolve(e, "example")["value"] for e in examples.values()]

    def success(self, operation: dict[str, Any], where: str) -> tuple[str, Any, str]:
        """(result, output schema, description) of the operation's one 2xx response: `data` when
        the envelope's data is an object (the tool returns it), `envelope` when it is not (MCP
        structured content is an object: a listing comes back as {data, meta}, with the
        cursor), `none` without a body."""
        (status,) = [s for s in operation["responses"] if str(s).startswith("2")]
        response = self.contract.resolve(operation["responses"][status], where)
        content = response.get("content", {}).get("application/json")
        if not content:
            return "none", None, response.get("description", "")
        raw_meta = self.contract.resolve(content["schema"], where).get("properties", {}).get("meta")
        envelope = self.inline(content["schema"], where)
        data = envelope.get("properties", {}).get("data")
        if data is None:
            raise ContractError(f"{where}: the success body must be a {{data, meta}} envelope")
        # The data alone, unless the meta carries more than the plain Meta (a cursor, a sync
        # token): then the tool returns the envelope, so the assistant can pass it back.
        plain_meta = raw_meta == {"$ref": "#/components/schemas/Meta"}
        if data.get("type") == "object" and plain_meta:
            return "data", data, response.get("description", "")
        return "envelope", envelope, response.get("description", "")

    def tool(self, path: str, method: str, operation: dict[str, Any], shared: list[Any]) -> dict[str, Any]:
        where = f"{method.upper()} {path}"
        name = operation.get("x-mcp-tool", snake(operation["operationId"]))
        if not isinstance(name, str) or not MCP_TOOL_NAME.match(name):
            raise ContractError(f"{where}: x-mcp-tool {name!r} is not an MCP tool name")
        properties: dict[str, Any] = {}
        required: list[str] = []
        arguments: list[dict[str, str]] = []
        for raw in [*shared, *operation.get("parameters", [])]:
            param = self.contract.resolve(raw, where)
            arg = snake(param["name"])
            schema = self.inline(param["schema"], where)
            if param.get("description"):
                schema["description"] = unwrap(param["description"])
            if "example" in param:
                schema["examples"] = [param["example"]]
            properties[arg] = schema
            if param.get("required"):
                required.append(arg)
            arguments.append({"name": arg, "location": param["in"], "wire_name": param["name"]})
        examples: list[Any] = []
        if "requestBody" in operation:
            body = self.contract.resolve(operation["requestBody"], where)
            schema = self.inline(body["content"]["application/json"]["schema"], where)
            if schema.get("type") != "object" or schema.get("additionalProperties") is not False:
                raise ContractError(f"{where}: a tool's body must be a closed object")
            for field, field_schema in schema["properties"].items():
                if field in properties or not IDENTIFIER.match(field):
                    raise ContractError(
                        f"{where}: body field {field!r} cannot be a flat tool argument"
                    )
                properties[field] = field_schema
                arguments.append({"name": field, "location": "body", "wire_name": field})
            required.extend(schema.get("required", []))
            examples = self.body_examples(body)
        input_schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            input_schema["required"] = required
        result, output_schema, result_description = self.success(operation, where)
        summary = operation.get("summary", "").strip()
        description = "\n\n".join(
            part
            for part in (
                summary.rstrip(".") + ".",
                unwrap(operation.get("description", "")),
                *(f"Example arguments: {json.dumps(e, sort_keys=False)}" for e in examples),
            )
            if part
        )
        fields = {
            "name": name,
            "operation_id": operation["operationId"],
            "method": method.upper(),
            "path": path,
            "title": summary,
            "description": description,
            "arguments": tuple(
                (arg["name"], arg["location"], arg["wire_name"]) for arg in arguments
            ),
            "input_schema": input_schema,
            "output_schema": output_schema,
            "result": result,
            "result_description": unwrap(result_description),
            # What the HTTP method promises (RFC 9110) as MCP tool annotations: a GET changes
            # nothing, a POST only adds, PUT, PATCH and DELETE change what exists.
            "read_only": method == "get",
            "destructive": method in ("put", "patch", "delete"),
            "idempotent": method in ("get", "put", "delete"),
        }
        # Python literals for the template (repr: the formatter then lays them out).
        literals = {key: repr(value) for key, value in fields.items()}
        literals["arguments"] = [repr(argument) for argument in fields["arguments"]]
        return literals

    def tools(self) -> list[dict[str, Any]]:
        result = []
        for path, item in self.contract.raw["paths"].items():
            shared = item.get("parameters", [])
            for method, operation in item.items():
                if method not in SUPPORTED_METHODS:
                    continue
                if operation.get("x-mcp-tool") is False:  # not a tool (a stream)
                    continue
                if self.contract.secured(operation, f"{method.upper()} {path}"):
                    result.append(self.tool(path, method, operation, shared))
        names = [str(ast.literal_eval(tool["name"])) for tool in result]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ContractError(f"MCP tool names used twice: {duplicates}")
        return result


def visit(parser: Any, model_path: Path) -> dict[str, object]:
    contract = Contract(parser.raw_obj)
    try:
        operations = contract.operations()
        tools = McpTools(contract).tools()
    except ContractError as error:
        raise SystemExit(f"regen: openapi.yaml: {error}") from None
    return {
        "mcp_tools": tools,
        "stub_operations": operations,
        "stub_modules": sorted({op["module"] for op in operations}),
        "stub_models": sorted(contract.models),
        "model_module": model_path.stem,
    }
