"""A task field is declared once for the code (the table, impl/tasks/tables.py): the contract, the
table and every statement of the store must agree on the same set, so a field added to one of
them and forgotten in another fails here, before any request can drop it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from impl.tasks import columns, store
from impl.tasks.list_sql import FILTERS, ListQuery, list_statement
from impl.tasks.tables import Task

CONTRACT = yaml.safe_load((Path(__file__).resolve().parents[2] / "openapi.yaml").read_text())
SCHEMAS = CONTRACT["components"]["schemas"]


def _properties(schema: str) -> dict[str, Any]:
    return dict(SCHEMAS[schema]["properties"])


def _nullable(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return isinstance(kind, list) and "null" in kind


def test_contract_table_and_store_name_the_same_fields() -> None:
    table = {column.name for column in Task.__table__.columns if not columns.is_internal(column)}
    assert set(_properties("Task")) == table == set(columns.FIELDS) == set(store.TASK_FIELDS)
    assert set(SCHEMAS["Task"]["required"]) == set(columns.FIELDS)


def test_the_writable_fields_are_the_request_bodies() -> None:
    assert set(_properties("TaskWrite")) == set(columns.WRITABLE)
    assert set(_properties("TaskPatch")) == set(columns.WRITABLE)
    nullable = {name for name, schema in _properties("TaskWrite").items() if _nullable(schema)}
    assert nullable == columns.NULLABLE


def test_the_filters_are_the_list_parameters() -> None:
    """Each filter says how its total is known (impl/tasks/list_sql.py FILTERS)."""
    parameters = CONTRACT["components"]["parameters"]
    listed = CONTRACT["paths"]["/api/tasks"]["get"]["parameters"]
    names = {parameters[ref["$ref"].rsplit("/", 1)[1]]["name"] for ref in listed}
    assert set(FILTERS) == names - {"sort", "limit", "cursor"}
    assert set(FILTERS.values()) == {"counters", "capped"}
    assert ListQuery().counted and not ListQuery(q="x").counted


async def test_every_statement_returns_the_fields_in_order(db: asyncpg.Connection) -> None:
    """What PostgreSQL says each statement returns (its prepared columns), not what the text
    looks like: the rows are built by position."""
    statements = {
        "get": store.GET_SQL,
        "insert": store.INSERT_SQL,
        "quota insert": store.QUOTA_INSERT_SQL,
        "list": list_statement("u", ListQuery(status="pending", q="x"), None).sql,
    }
    for name, sql in statements.items():
        prepared = await db.prepare(sql)
        returned = [attribute.name for attribute in prepared.get_attributes()]
        assert returned[: len(columns.FIELDS)] == list(columns.FIELDS), name


async def test_insert_args_fill_every_parameter(db: asyncpg.Connection) -> None:
    fields = {name: None for name in columns.WRITABLE}
    args = store.insert_args(uuid.uuid4(), "u", fields)
    prepared = await db.prepare(store.INSERT_SQL)
    assert len(prepared.get_parameters()) == len(args)
