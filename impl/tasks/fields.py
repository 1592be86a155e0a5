"""From the generated request models to the store's column values, and the ETag scheme.

Field by field as the table declares them (impl/tasks/columns.py): a new plain column needs
nothing here. Only a field with a rule of its own names itself (tags: duplicates merged)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel

from generated.models import TaskPatch, TaskWrite
from impl.platform.errors import InvalidInput
from impl.tasks import recurrence, reminders
from impl.tasks.columns import DATETIMES, NULLABLE, WRITABLE


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


def _reminders(value: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return reminders.normalize(value, instant)


# Rules of single fields, by name (the contract states them). What depends on two fields (a
# rule needs a due date) is the table's CHECK, which sees a PATCH merged with the stored row.
_RULES: dict[str, Callable[[Any], Any]] = {
    "tags": _unique,
    "recurrence": recurrence.normalize_rule,
    "time_zone": recurrence.check_time_zone,
    "reminders": _reminders,
}


def _column_value(name: str, value: Any) -> Any:
    value = _plain(value)
    if value is None:
        return None
    if name in DATETIMES:
        return instant(value, f"body.{name}")
    rule = _RULES.get(name)
    return rule(value) if rule else value


def write_fields(body: TaskWrite) -> dict[str, Any]:
    """Every writable field: what PUT sets and POST inserts. Omitted fields take the defaults of
    the contract (the generated model holds them)."""
    return {name: _column_value(name, getattr(body, name)) for name in WRITABLE}


def patch_changes(body: TaskPatch) -> dict[str, Any]:
    """Only the fields the client sent; explicit null only where the table allows it (the
    generated PATCH model takes null for every field: it cannot tell "absent" from "null")."""
    changes: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name not in NULLABLE:
            raise InvalidInput(f"body.{name}", "Field may not be null", "null_not_allowed")
        changes[name] = _column_value(name, value)
    return changes


# Exactly what etag() writes: ASCII digits without leading zeros (ETags compare as strings,
# so "01" is not "1"; and str.isdigit() would also take "²", which int() then refuses).
_STRONG_ETAG = re.compile(r'"(0|[1-9][0-9]*)"')
# RFC 9110's entity-tag (section 8.8.3): an optional W/ and a quoted opaque tag of etagc
# (visible ASCII but DQUOTE, and obs-text: header bytes 0x80-0xFF arrive as Latin-1 characters).
_ENTITY_TAG = r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"'
# If-Match = "*" / #entity-tag: at least one tag, commas with optional whitespace between, and
# empty list elements tolerated, as section 5.6.1 asks of recipients.
_IF_MATCH = re.compile(rf"[ \t,]*{_ENTITY_TAG}(?:[ \t]*,[ \t,]*{_ENTITY_TAG})*[ \t,]*")
_NOT_AN_ETAG = (
    'Not a list of entity tags: send the ETag as the server gave it, quotes included ("3"), '
    "or *; a bare version (3) is not accepted"
)


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(header: str | None) -> list[int] | None:
    """The versions an If-Match header accepts; None for no header or `*` (any version).

    A header that is not `*` or a list of entity tags (an unquoted `3`, `,,,`) is refused with
    422 (the contract says so): it names nothing, and 412 would tell the client that the task
    changed when it did not. A bare version is refused rather than read as one, so a client
    that strips the quotes learns it at once instead of on the day its tags stop being numbers.
    A well-formed tag that names no version of ours (weak, `"one"`, `"01"`) matches nothing, so
    the write answers 412 (RFC 9110 compares If-Match strongly)."""
    if header is None or header.strip() == "*":
        return None
    if not _IF_MATCH.fullmatch(header):
        raise InvalidInput("header.If-Match", _NOT_AN_ETAG, "if_match")
    versions = []
    for tag in re.findall(_ENTITY_TAG, header):
        match = _STRONG_ETAG.fullmatch(tag)
        if match and len(match.group(1)) <= 10 and int(match.group(1)) < 2**31:
            versions.append(int(match.group(1)))  # versions are PostgreSQL integers
    return versions
