"""The contract names every type a client generator makes, so that each one renders it cleanly
(tests/contract/test_client_generators.py proves it with the generators themselves):

- every enum and every object is a schema of its own under components/schemas, never inline
  (generators invent names such as `TaskStatsByPriority`, `ModelErrorCodeEnum` or anonymous unions);
- no schema is named after a built-in of a client language (`Error` became `ModelError`);
- enum values that are not identifiers come with `x-enum-varnames` (else `VALUE_1`,
  `field_created_at`);
- no parameter key equals a schema key (a parameter `StatusFilter` gave `StatusFilter2`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

CONTRACT = Path(__file__).resolve().parents[2] / "openapi.yaml"

# Names a generator must rename in at least one of the client languages proven here (TypeScript,
# Python), or that shadow what generated code imports.
BUILT_INS = {
    "Array", "Blob", "Boolean", "Date", "Error", "File", "FormData", "Function", "Headers", "Map",
    "Number", "Object", "Promise", "Record", "Request", "RequestInit", "Response", "Set", "String",
    "Symbol", "Exception", "Enum", "Any", "List", "Dict", "Optional", "Union", "Literal", "Type",
}
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONTRACT.read_text())
    return loaded


def inline_types(node: Any, where: str, top: bool) -> Iterator[str]:
    """Where an enum or an object is declared inside another schema, parameter or body."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from inline_types(item, f"{where}/{index}", top=False)
        return
    if not isinstance(node, dict):
        return
    if "$ref" in node:
        return
    if not top and ("enum" in node or node.get("type") == "object" or "properties" in node):
        yield where
    for key, value in node.items():
        if key in ("example", "examples", "default", "enum", "x-enum-varnames"):
            continue
        if key == "allOf":
            # An allOf member adds fields to the named schema that holds it: generators merge it
            # into that schema's type (ListMeta), so only what sits inside it counts.
            for index, member in enumerate(value):
                yield from inline_types(member, f"{where}/allOf/{index}", top=True)
            continue
        yield from inline_types(value, f"{where}/{key}", top=False)


def test_every_enum_and_object_is_a_named_schema(spec: dict[str, Any]) -> None:
    found: list[str] = []
    for name, schema in spec["components"]["schemas"].items():
        found += inline_types(schema, f"components/schemas/{name}", top=True)
    for name, parameter in spec["components"]["parameters"].items():
        found += inline_types(parameter["schema"], f"components/parameters/{name}", top=False)
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for media in operation.get("requestBody", {}).get("content", {}).values():
                found += inline_types(media["schema"], f"{method} {path} body", top=False)
            for status, response in operation["responses"].items():
                for media in response.get("content", {}).values():
                    found += inline_types(media["schema"], f"{method} {path} {status}", top=False)
    assert found == [], "give these their own schema under components/schemas"


def test_no_schema_is_named_after_a_built_in(spec: dict[str, Any]) -> None:
    assert set(spec["components"]["schemas"]) & BUILT_INS == set()


def test_enum_values_that_are_not_identifiers_have_member_names(spec: dict[str, Any]) -> None:
    for name, schema in spec["components"]["schemas"].items():
        values = schema.get("enum", [])
        if all(IDENTIFIER.match(str(value)) for value in values):
            continue
        names = schema.get("x-enum-varnames")
        assert names is not None, f"{name}: values {values} need x-enum-varnames"
        assert len(names) == len(values), f"{name}: one x-enum-varnames entry per value"
        assert all(IDENTIFIER.match(member) for member in names), names
        assert len(set(names)) == len(names), f"{name}: duplicate member names"


def test_parameter_keys_differ_from_schema_keys(spec: dict[str, Any]) -> None:
    schemas = set(spec["components"]["schemas"])
    parameters = set(spec["components"]["parameters"])
    assert schemas & parameters == set()
    assert all(key.endswith("Param") for key in parameters), sorted(parameters)
