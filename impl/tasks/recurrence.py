"""Recurrence rules: which RFC 5545 RRULEs the API takes, and a series' next occurrence.

python-dateutil parses and expands the rule; this module only checks that each part is one the
contract states (so a refusal names the part) and keeps the time of day in the task's zone:
the rule expands from the due date as a wall-clock time in `time_zone` (a zoneinfo datetime),
so "every day at 09:00 Europe/Berlin" stays 09:00 local across DST changes. A local time that
does not exist (02:30 on the spring-forward day) and one that exists twice follow RFC 5545
(3.3.5): a missing time is read with the offset before the gap (02:30 becomes 03:30 summer
time), a repeated one is its first occurrence. This is zoneinfo's fold=0, which dateutil's
expansion keeps.

Each occurrence carries the rest of its series: its rule's COUNT is how many occurrences are left
including itself, so the next one gets COUNT - 1 and a series with COUNT=1 ends with this one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from dateutil.rrule import rrule, rrulestr

from impl.platform.errors import InvalidInput

RULE_FIELD = "body.recurrence"
ZONE_FIELD = "body.time_zone"
FREQUENCIES = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
_DAY = r"(MO|TU|WE|TH|FR|SA|SU)"
_LIST = r"{item}(,{item})*"
# Each supported part and the shape of its value (RFC 5545 3.3.10); the library parses them.
PART_VALUES = {
    "FREQ": "|".join(FREQUENCIES),
    "INTERVAL": r"[1-9][0-9]{0,2}",  # 1-999
    "COUNT": r"[1-9][0-9]{0,2}",  # 1-999
    "UNTIL": r"[0-9]{8}(T[0-9]{6}Z)?",
    "BYDAY": _LIST.format(item=rf"([+-]?([1-9]|[1-4][0-9]|5[0-3]))?{_DAY}"),
    "BYMONTHDAY": _LIST.format(item=r"[+-]?([1-9]|[12][0-9]|3[01])"),
    "BYMONTH": _LIST.format(item=r"([1-9]|1[0-2])"),
    "BYSETPOS": _LIST.format(item=r"[+-]?([1-9][0-9]{0,2})"),
    "WKST": _DAY,
}
SUPPORTED = ", ".join(PART_VALUES)


def _refuse(message: str) -> InvalidInput:
    return InvalidInput(RULE_FIELD, message, "recurrence")


def normalize_rule(text: str) -> str:
    """The rule as stored: upper case, without an `RRULE:` prefix, parts as sent. Refuses (422)
    an unsupported or malformed part, naming it."""
    rule = text.strip().upper().removeprefix("RRULE:")
    if not rule:
        raise _refuse("Empty rule: give at least FREQ, e.g. FREQ=WEEKLY;BYDAY=MO")
    parts: dict[str, str] = {}
    for part in rule.split(";"):
        name, equals, value = part.partition("=")
        if not equals or not name:
            raise _refuse(f"Not a NAME=VALUE part: {part!r}")
        if name not in PART_VALUES:
            raise _refuse(f"{name} is not supported; the supported parts are {SUPPORTED}")
        if name in parts:
            raise _refuse(f"{name} is given twice")
        if not re.fullmatch(PART_VALUES[name], value):
            raise _refuse(_bad_value(name, value))
        parts[name] = value
    if "FREQ" not in parts:
        raise _refuse("FREQ is required (DAILY, WEEKLY, MONTHLY or YEARLY)")
    if "COUNT" in parts and "UNTIL" in parts:
        raise _refuse("COUNT and UNTIL cannot both be given (RFC 5545)")
    _check_always_recurs(parts)
    try:  # what the shapes cannot see, e.g. UNTIL=20260230
        _expansion(rule, datetime(2026, 1, 1, tzinfo=UTC))
    except ValueError as error:
        raise _refuse(f"Not a valid rule: {error}") from None
    return rule


# The longest month each month number can have (29 February).
MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30,
              12: 31}


def _check_always_recurs(parts: dict[str, str]) -> None:
    """Refuse the combinations that could match no date ever (every 30 February, the 6th Monday,
    every 24 months from an odd year on leap days): dateutil searches such a rule up to year
    9999, seconds of CPU per request. What stays has its next occurrence within 28 years (the
    calendar's cycle of weekdays and leap years), found in a few hundred steps at most."""
    freq = parts["FREQ"]
    interval = int(parts.get("INTERVAL", "1"))
    days = parts["BYDAY"].split(",") if "BYDAY" in parts else []
    ordinals = [int(day[:-2]) for day in days if len(day) > 2]
    if freq in ("DAILY", "WEEKLY"):
        for name in ("BYMONTHDAY", "BYSETPOS"):
            if name in parts:
                raise _refuse(f"{name} is for FREQ=MONTHLY or YEARLY, not {freq}")
        if ordinals:
            raise _refuse(f"BYDAY with a number (1MO, -1FR) is for FREQ=MONTHLY or YEARLY, "
                          f"not {freq}")
        if freq == "DAILY" and interval > 1 and ("BYDAY" in parts or "BYMONTH" in parts):
            raise _refuse("FREQ=DAILY with INTERVAL above 1 takes no BYDAY or BYMONTH (every "
                          "Nth day may never fall on them); use FREQ=WEEKLY with BYDAY")
        if freq == "WEEKLY" and interval > 1 and "BYMONTH" in parts:
            raise _refuse("FREQ=WEEKLY with INTERVAL above 1 takes no BYMONTH")
        return
    limit = 4 if freq == "MONTHLY" else 52  # every month has 4 of each weekday, a year 52
    if any(ordinal == 0 or abs(ordinal) > limit for ordinal in ordinals):
        raise _refuse(f"BYDAY numbers go from 1 to {limit} (or -1 to -{limit}) with FREQ={freq}")
    if ordinals and "BYMONTHDAY" in parts:
        raise _refuse("BYDAY with a number (1MO) and BYMONTHDAY cannot be combined")
    if "BYSETPOS" in parts:
        if not days or ordinals or "BYMONTHDAY" in parts:
            raise _refuse("BYSETPOS needs BYDAY of plain days (MO,TU,WE,TH,FR) and no BYMONTHDAY")
        largest = limit * len(days)
        if any(abs(int(pos)) > largest or int(pos) == 0 for pos in parts["BYSETPOS"].split(",")):
            raise _refuse(f"BYSETPOS goes from 1 to {largest} (or -1 to -{largest}) here")
    if freq == "MONTHLY" and interval > 1 and "BYMONTH" in parts:
        raise _refuse("FREQ=MONTHLY with INTERVAL above 1 takes no BYMONTH")
    if "BYMONTHDAY" in parts:
        months = [int(m) for m in parts["BYMONTH"].split(",")] if "BYMONTH" in parts else \
            list(MONTH_DAYS)
        month_days = [abs(int(day)) for day in parts["BYMONTHDAY"].split(",")]
        possible = [(m, d) for m in months for d in month_days if d <= MONTH_DAYS[m]]
        if not possible:
            raise _refuse("BYMONTHDAY names no day that BYMONTH's months have")
        if interval > 1 and all(m == 2 and d == 29 for m, d in possible):
            raise _refuse("29 February with INTERVAL above 1 may never fall on a leap year")


def _bad_value(name: str, value: str) -> str:
    if name == "FREQ":
        return f"FREQ={value} is not supported: DAILY, WEEKLY, MONTHLY or YEARLY"
    if name == "UNTIL":
        return f"UNTIL={value}: a date (20261231) or a UTC date-time (20261231T170000Z)"
    if name in ("INTERVAL", "COUNT"):
        return f"{name}={value}: a whole number from 1 to 999"
    return f"{name}={value} is not a valid value of {name}"


def check_time_zone(name: str) -> str:
    """An IANA time zone name as zoneinfo knows it (exactly: `Europe/Berlin`, not `europe/berlin`)."""
    if name not in _zone_names():
        raise InvalidInput(
            ZONE_FIELD,
            f"Unknown time zone {name!r}: an IANA name such as Europe/Berlin or America/New_York",
            "time_zone",
        )
    return name


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def _expansion(rule: str, start: datetime) -> rrule:
    """The rule expanded from `start` (an aware datetime). A date-only UNTIL is the end of that
    day in the start's zone (dateutil wants a UTC UNTIL when the start is aware)."""
    until = re.search(r"(?:^|;)UNTIL=([0-9]{8})(?:;|$)", rule)
    if until:
        day = datetime.strptime(until.group(1), "%Y%m%d").date()
        end = datetime.combine(day, time(23, 59, 59), tzinfo=start.tzinfo).astimezone(UTC)
        rule = rule.replace(f"UNTIL={until.group(1)}", f"UNTIL={end:%Y%m%dT%H%M%SZ}")
    expanded = rrulestr(rule, dtstart=start)
    assert isinstance(expanded, rrule)  # one RRULE, no RDATE or EXDATE: never an rruleset
    return expanded


@dataclass(frozen=True, slots=True)
class Occurrence:
    due: datetime  # UTC
    rule: str  # COUNT one less than the previous one's
    # The series' wall-clock time when `due` does not show it: a time that did not exist that
    # day (02:30 on the spring-forward day is due at 03:30), so the one after is 02:30 again.
    wall_time: time | None


def next_occurrence(
    due: datetime, rule: str, zone: str, wall_time: time | None = None
) -> Occurrence | None:
    """The occurrence after the one due at `due` (whose series keeps `wall_time`, when given),
    or None when the series ends (COUNT reached, past UNTIL)."""
    count = re.search(r"(?:^|;)COUNT=([0-9]+)", rule)
    if count and int(count.group(1)) <= 1:
        return None
    local = due.astimezone(ZoneInfo(zone))
    if wall_time is not None:
        local = local.replace(hour=wall_time.hour, minute=wall_time.minute,
                              second=wall_time.second, microsecond=wall_time.microsecond)
    found = _expansion(rule, local).after(local)
    if found is None:
        return None
    if count:
        remaining = int(count.group(1)) - 1
        rule = re.sub(r"(^|;)COUNT=[0-9]+", rf"\g<1>COUNT={remaining}", rule)
    due_next = found.astimezone(UTC)
    shown = due_next.astimezone(found.tzinfo).timetz().replace(tzinfo=None)
    kept = found.time() if shown != found.time() else None
    return Occurrence(due_next, rule, kept)
