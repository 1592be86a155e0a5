"""A task's fields as the code sees them, derived from the one declaration of the table
(impl/tasks/tables.py `Task`): which columns the API returns, which a client writes, which may be
null, and how each goes to and comes from PostgreSQL. A column is returned and writable unless
its declaration says otherwise (`info=SET_BY_SERVER` or `info=INTERNAL`); nothing here lists a
field by hand, so adding a plain column to the table is all the code needs.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from impl.tasks.tables import Task, is_internal, is_set_by_server

TABLE: sa.Table = Task.__table__  # type: ignore[attr-defined]
# What the API returns, in the table's order.
RETURNED: tuple[sa.Column[Any], ...] = tuple(c for c in TABLE.columns if not is_internal(c))
# str(): SQLAlchemy names are a str subclass, which orjson refuses as a key.
FIELDS: tuple[str, ...] = tuple(str(c.name) for c in RETURNED)
# What a client writes (POST and PUT: all of them; PATCH: some), in the table's order.
WRITABLE_COLUMNS: tuple[sa.Column[Any], ...] = tuple(
    c for c in RETURNED if not is_set_by_server(c)
)
WRITABLE: tuple[str, ...] = tuple(str(c.name) for c in WRITABLE_COLUMNS)
NULLABLE: frozenset[str] = frozenset(str(c.name) for c in WRITABLE_COLUMNS if c.nullable)
# Columns whose values go to PostgreSQL as RFC 3339 text (see list_sql.timestamp).
DATETIMES: frozenset[str] = frozenset(
    str(c.name) for c in RETURNED if isinstance(c.type, sa.DateTime)
)


def parameter_type(column: sa.Column[Any]) -> str:
    """The SQL type a parameter for `column` is cast to. Text types are cast to `text`, never to
    their varchar(n), which would cut a longer value silently instead of letting the CHECK
    refuse it; date-times travel as text (list_sql.timestamp)."""
    kind = column.type
    if isinstance(kind, postgresql.ENUM):
        return str(kind.name)
    if isinstance(kind, sa.ARRAY):
        item = kind.item_type
        return f"{'text' if isinstance(item, sa.String) else _sql_name(item)}[]"
    if isinstance(kind, sa.DateTime):
        return "text::timestamptz"
    if isinstance(kind, sa.String):  # Text is a String too
        return "text"
    return _sql_name(kind)


def _sql_name(kind: Any) -> str:
    return str(kind.compile(dialect=postgresql.dialect())).lower()  # type: ignore[no-untyped-call]


def select_list(qualifier: str = "") -> str:
    """The returned columns for a SELECT or RETURNING, with enums and arrays of varchar read as
    text (`qualifier`: "tasks." in statements that join)."""
    items = []
    for column in RETURNED:
        name = f"{qualifier}{column.name}"
        if isinstance(column.type, postgresql.ENUM):
            items.append(f"{name}::text AS {column.name}")
        elif isinstance(column.type, sa.ARRAY):
            items.append(f"{name}::text[] AS {column.name}")
        else:
            items.append(name)
    return ", ".join(items)
