"""From the generated request models to the store's column values, and the ETag scheme."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel

from generated.models import Priority, TaskPatch, TaskWrite
from impl.platform.errors import InvalidInput

# Fields that the contract declares nullable; the generated PATCH model also takes null for the
# others (it cannot tell "absent" from "null" for optional fields), so that is refused here.
NULLABLE = {"description", "due_date"}


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):  # RootModel items, e.g. tags
        return value.model_dump()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _unique(tags: list[str]) -> list[str]:
    """The contract: duplicate tags are merged, keeping the first occurrence."""
    return list(dict.fromkeys(tags))


def instant(text: str | None, field: str) -> datetime | None:
    """An RFC 3339 date-time (the contract's pattern already checked its shape) as a UTC
    datetime. What the pattern cannot see is a 422 here, not a 500 in the driver: a day that does
    not exist (2026-02-30), a leap second, or 0001-01-01T00:00:00+14:00, which is before year 1
    in UTC and fits neither Python nor PostgreSQL."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(field, "Not a valid RFC 3339 date-time", "datetime") from None


def write_fields(body: TaskWrite) -> dict[str, Any]:
    """Every writable field: what PUT sets and POST inserts. Omitted fields take defaults."""
    return {
        "title": body.title,
        "description": body.description,
        "completed": bool(body.completed),
        # The generator writes enum defaults as plain strings: normalize through the enum.
        "priority": Priority(_plain(body.priority) or "medium").value,
        "due_date": instant(body.due_date, "body.due_date"),
        "tags": _unique(_plain(body.tags) or []),
    }


def patch_changes(body: TaskPatch) -> dict[str, Any]:
    """Only the fields the client sent; explicit null only where the contract allows it."""
    changes: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = _plain(getattr(body, name))
        if value is None and name not in NULLABLE:
            raise InvalidInput(f"body.{name}", "Field may not be null", "null_not_allowed")
        if name == "tags":
            value = _unique(value)
        elif name == "due_date":
            value = instant(value, "body.due_date")
        changes[name] = value
    return changes


# Exactly what etag() writes: ASCII digits without leading zeros (ETags compare as strings,
# so "01" is not "1"; and str.isdigit() would also take "²", which int() then refuses).
_STRONG_ETAG = re.compile(r'"(0|[1-9][0-9]*)"')


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(header: str | None) -> list[int] | None:
    """The versions an If-Match header accepts; None for no header or `*` (any version).
    Weak tags never match (RFC 9110 uses strong comparison for If-Match); a value that names no
    version of ours matches nothing, so the write answers 412."""
    if header is None or header.strip() == "*":
        return None
    versions = []
    for tag in header.split(","):
        tag = tag.strip()
        match = _STRONG_ETAG.fullmatch(tag)
        if match and len(match.group(1)) <= 10 and int(match.group(1)) < 2**31:
            versions.append(int(match.group(1)))  # versions are PostgreSQL integers
    return versions
