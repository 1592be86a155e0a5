"""Nothing a client writes is dropped: every writable field of the contract (TaskWrite's
properties, read from openapi.yaml at test time) is sent through POST, PUT and PATCH and must
come back unchanged, in the answer and on a later GET. The values are made from each field's
schema, so a field added to the contract is covered without a new test; integers go out once as
whole floats (`3.0`), which JSON Schema counts as integers."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.factories import User

CONTRACT = yaml.safe_load((Path(__file__).resolve().parents[2] / "openapi.yaml").read_text())


def schema_of(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with its $ref followed (the siblings of a $ref, such as a default, kept)."""
    if "$ref" not in schema:
        return schema
    target: Any = CONTRACT
    for part in schema["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**schema_of(target), **{k: v for k, v in schema.items() if k != "$ref"}}


WRITE = schema_of({"$ref": "#/components/schemas/TaskWrite"})
FIELDS = {name: schema_of(schema) for name, schema in WRITE["properties"].items()}


def _types(schema: dict[str, Any]) -> set[str]:
    kind = schema.get("type", "string" if "enum" in schema else None)
    return set(kind) - {"null"} if isinstance(kind, list) else {kind}


def _is_datetime(schema: dict[str, Any]) -> bool:
    return schema.get("format") == "date-time"


def value(schema: dict[str, Any], variant: int) -> Any:
    """A valid value of `schema`, never its default, a different one for each variant. A field
    whose valid values a schema cannot spell (an RRULE, an IANA zone) gives them as examples."""
    if "examples" in schema:
        return schema["examples"][variant % len(schema["examples"])]
    if "oneOf" in schema:
        return value(schema_of(schema["oneOf"][variant % len(schema["oneOf"])]), variant)
    if "enum" in schema:
        choices = [v for v in schema["enum"] if v != schema.get("default")]
        return choices[variant % len(choices)]
    kinds = _types(schema)
    if "boolean" in kinds:
        return variant % 2 == 0 if schema.get("default") is False else variant % 2 == 1
    if "integer" in kinds:
        low = schema.get("minimum", 0)
        high = schema.get("maximum", low + 1000)
        chosen = low + 1 + variant
        assert chosen <= high
        return chosen
    if "array" in kinds:
        items = schema_of(schema["items"])
        count = max(schema.get("minItems", 0), min(2, schema.get("maxItems", 2)))
        return [value(items, variant * 10 + index) for index in range(count)]
    if "object" in kinds:
        properties = schema["properties"]
        return {name: value(schema_of(properties[name]), variant) for name in schema["required"]}
    if _is_datetime(schema):
        return f"{2031 + variant}-05-06T07:08:09Z"  # as the API writes instants inside objects
    assert "string" in kinds, f"no value generator for {schema}"
    text = f"Round trip {variant}"
    text = (text * (1 + schema.get("minLength", 0) // len(text)))[: schema.get("maxLength", 64)]
    pattern = schema.get("pattern")
    assert pattern is None or re.search(pattern, text), (pattern, text)
    return text


def same(schema: dict[str, Any], sent: Any, got: Any) -> bool:
    if _is_datetime(schema) and isinstance(sent, str) and isinstance(got, str):
        return datetime.fromisoformat(sent) == datetime.fromisoformat(got)
    return bool(sent == got)


def body(variant: int) -> dict[str, Any]:
    return {name: value(schema, variant) for name, schema in FIELDS.items()}


def mismatches(sent: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    return {
        name: (sent_value, task.get(name))
        for name, sent_value in sent.items()
        if not same(FIELDS[name], sent_value, task.get(name))
    }


def as_whole_floats(sent: dict[str, Any]) -> dict[str, Any]:
    """The same body with every integer written as a float with a zero fraction."""
    return {
        name: float(v) if "integer" in _types(FIELDS[name]) and isinstance(v, int) else v
        for name, v in sent.items()
    }


def test_the_generator_covers_every_writable_field() -> None:
    assert set(FIELDS) == set(body(0)) and FIELDS
    for name, schema in FIELDS.items():
        assert value(schema, 0) != schema.get("default"), name
        assert value(schema, 1) != value(schema, 2) or "boolean" in _types(schema), name


async def test_post_put_and_patch_keep_every_writable_field(
    client: httpx.AsyncClient, alice: User
) -> None:
    posted = body(0)
    created = await client.post("/api/tasks", json=posted, headers=alice.headers)
    assert created.status_code == 201, created.text
    task = created.json()["data"]
    assert mismatches(posted, task) == {}, "POST dropped or changed fields"
    url = f"/api/tasks/{task['id']}"

    put = body(1)
    replaced = await client.put(url, json=as_whole_floats(put), headers=alice.headers)
    assert replaced.status_code == 200, replaced.text
    assert mismatches(put, replaced.json()["data"]) == {}, "PUT dropped or changed fields"

    current = dict(put)
    for name, schema in FIELDS.items():
        change = {name: value(schema, 2)}
        patched = await client.patch(url, json=change, headers=alice.headers)
        assert patched.status_code == 200, (name, patched.text)
        current.update(change)
        assert mismatches(current, patched.json()["data"]) == {}, f"PATCH {name} alone"

    read = await client.get(url, headers=alice.headers)
    assert mismatches(current, read.json()["data"]) == {}, "GET after the writes"
