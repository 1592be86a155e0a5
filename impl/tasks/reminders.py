"""A task's reminders as stored: a JSON array of {"at": instant} or {"minutes_before": n}.

The table's trigger (migration 0008) turns them into instants to fire; this module checks what a
client sends (the contract cannot say "exactly one of" in a way every generator understands) and
moves the absolute ones with their task when a recurring task makes its next occurrence.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from impl.platform.errors import InvalidInput

MAX_REMINDERS = 5
MAX_MINUTES_BEFORE = 40320  # 28 days


def _instant_text(moment: datetime) -> str:
    """RFC 3339 in UTC, as the API writes every instant."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def normalize(reminders: list[dict[str, Any]], parse_instant: Any) -> list[dict[str, Any]]:
    """Each reminder exactly one of `at` (an RFC 3339 instant, stored in UTC) or
    `minutes_before` (0-40320); duplicates merged, keeping the first."""
    if len(reminders) > MAX_REMINDERS:
        raise InvalidInput("body.reminders", f"At most {MAX_REMINDERS} reminders", "reminders")
    stored: list[dict[str, Any]] = []
    for index, reminder in enumerate(reminders):
        given = {name: value for name, value in reminder.items() if value is not None}
        field = f"body.reminders.{index}"
        if set(given) == {"at"}:
            item: dict[str, Any] = {"at": _instant_text(parse_instant(given["at"], f"{field}.at"))}
        elif set(given) == {"minutes_before"}:
            item = {"minutes_before": given["minutes_before"]}
        else:
            raise InvalidInput(
                field, 'Give exactly one of "at" (an instant) or "minutes_before" (before the '
                "due date)", "reminder",
            )
        if item not in stored:
            stored.append(item)
    return stored


def moved(reminders: list[dict[str, Any]], by: timedelta) -> list[dict[str, Any]]:
    """The reminders of the next occurrence: an absolute one keeps its distance to the due
    date (a reminder the evening before stays the evening before); relative ones follow the
    due date by themselves."""
    result = []
    for reminder in reminders:
        if "at" in reminder:
            at = datetime.fromisoformat(reminder["at"]) + by
            result.append({"at": _instant_text(at)})
        else:
            result.append(dict(reminder))
    return result
