"""Recurrence rules (impl/tasks/recurrence.py): the supported RRULE subset with a 422 that names
the part, and the next occurrence in the task's time zone across DST changes, missing and
repeated local times, the 31st, 29 February and a half-hour DST zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from impl.platform.errors import InvalidInput
from impl.tasks.recurrence import Occurrence, check_time_zone, next_occurrence, normalize_rule

BERLIN = ZoneInfo("Europe/Berlin")


def series(first: datetime, rule: str, zone: str, limit: int = 50) -> list[datetime]:
    """Every due date of a series, in `zone`, by completing each occurrence in turn."""
    dates = [first]
    current = Occurrence(first, normalize_rule(rule), None)
    while len(dates) < limit:
        following = next_occurrence(current.due, current.rule, zone, current.wall_time)
        if following is None:
            break
        dates.append(following.due)
        current = following
    return [d.astimezone(ZoneInfo(zone)) for d in dates]


@pytest.mark.parametrize("rule", [
    "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",  # every weekday
    "FREQ=MONTHLY;BYMONTHDAY=-1",  # the last day of every month
    "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH;COUNT=10",  # every 2 weeks on Monday and Thursday, 10x
    "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
    "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",  # the last weekday of the month
    "FREQ=MONTHLY;BYDAY=-1FR",
    "FREQ=DAILY;UNTIL=20271231",
    "FREQ=DAILY;UNTIL=20271231T170000Z",
    "FREQ=WEEKLY;WKST=SU;BYDAY=SU",
])
def test_the_stated_subset_is_accepted(rule: str) -> None:
    assert normalize_rule(rule) == rule
    assert normalize_rule(f"rrule:{rule.lower()}") == rule


@pytest.mark.parametrize(("rule", "says"), [
    ("FREQ=HOURLY", "FREQ=HOURLY is not supported"),
    ("FREQ=DAILY;BYHOUR=9", "BYHOUR is not supported"),
    ("BYDAY=MO", "FREQ is required"),
    ("FREQ=DAILY;FREQ=WEEKLY", "FREQ is given twice"),
    ("FREQ=DAILY;COUNT=0", "COUNT=0"),
    ("FREQ=DAILY;COUNT=2;UNTIL=20271231", "COUNT and UNTIL"),
    ("FREQ=DAILY;UNTIL=2027-12-31", "UNTIL=2027-12-31"),
    ("FREQ=DAILY;UNTIL=20270230", "Not a valid rule"),
    ("FREQ=WEEKLY;BYDAY=XX", "BYDAY=XX"),
    ("FREQ=WEEKLY;BYDAY=1MO", "BYDAY with a number"),
    ("FREQ=MONTHLY;BYDAY=6MO", "BYDAY numbers go from 1 to 4"),
    ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "BYMONTHDAY names no day"),
    ("FREQ=MONTHLY;BYMONTH=4;BYMONTHDAY=31", "BYMONTHDAY names no day"),
    ("FREQ=YEARLY;INTERVAL=4;BYMONTH=2;BYMONTHDAY=29", "29 February with INTERVAL"),
    ("FREQ=MONTHLY;BYSETPOS=1", "BYSETPOS needs BYDAY"),
    ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=5", "BYSETPOS goes from 1 to 4"),
    ("FREQ=DAILY;INTERVAL=7;BYDAY=TU", "INTERVAL above 1 takes no BYDAY"),
    ("FREQ=DAILY;BYMONTHDAY=3", "BYMONTHDAY is for FREQ=MONTHLY"),
    ("FREQ", "Not a NAME=VALUE part"),
    ("", "Empty rule"),
])
def test_an_unsupported_rule_is_refused_naming_the_part(rule: str, says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalize_rule(rule)
    (detail,) = refused.value.details
    assert detail["field"] == "body.recurrence"
    assert says in detail["message"]


def test_time_zones_are_iana_names_exactly() -> None:
    assert check_time_zone("Australia/Lord_Howe") == "Australia/Lord_Howe"
    for wrong in ("Mars/Olympus", "europe/berlin", "../../etc/passwd", "+02:00", ""):
        with pytest.raises(InvalidInput):
            check_time_zone(wrong)


def test_nine_oclock_in_berlin_stays_nine_across_both_dst_changes() -> None:
    spring = series(datetime(2026, 3, 27, 9, tzinfo=BERLIN), "FREQ=DAILY;COUNT=4", "Europe/Berlin")
    autumn = series(datetime(2026, 10, 23, 9, tzinfo=BERLIN), "FREQ=DAILY;COUNT=4", "Europe/Berlin")
    for dates in (spring, autumn):
        assert [(d.hour, d.minute) for d in dates] == [(9, 0)] * 4
    # The UTC instants move by the hour the clocks did.
    assert [d.astimezone(UTC).hour for d in spring] == [8, 8, 7, 7]
    assert [d.astimezone(UTC).hour for d in autumn] == [7, 7, 8, 8]


def test_a_local_time_that_does_not_exist_takes_the_offset_before_the_gap() -> None:
    # 29 March 2026, Berlin: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist (RFC 5545
    # 3.3.5: read with the offset before the gap, so 01:30 UTC, which is 03:30 CEST).
    dates = series(datetime(2026, 3, 28, 2, 30, tzinfo=BERLIN), "FREQ=DAILY;COUNT=3",
                   "Europe/Berlin")
    assert [d.astimezone(UTC) for d in dates] == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # 03:30 summer time
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 summer time again
    ]


def test_a_local_time_that_exists_twice_is_its_first() -> None:
    # 25 October 2026, Berlin: 02:30 happens in CEST, then again in CET; the first is meant.
    dates = series(datetime(2026, 10, 24, 2, 30, tzinfo=BERLIN), "FREQ=DAILY;COUNT=3",
                   "Europe/Berlin")
    assert dates[1].astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # +02:00
    assert dates[2].astimezone(UTC) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)  # +01:00


def test_the_31st_skips_shorter_months_and_minus_one_is_the_last_day() -> None:
    start = datetime(2027, 1, 31, 18, tzinfo=UTC)
    assert [d.date().isoformat() for d in series(start, "FREQ=MONTHLY;COUNT=4", "UTC")] == [
        "2027-01-31", "2027-03-31", "2027-05-31", "2027-07-31"]
    last = series(start, "FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=4", "UTC")
    assert [d.date().isoformat() for d in last] == [
        "2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30"]


def test_29_february_comes_back_in_leap_years() -> None:
    dates = series(datetime(2028, 2, 29, 9, tzinfo=UTC), "FREQ=YEARLY;COUNT=3", "UTC")
    assert [d.date().isoformat() for d in dates] == ["2028-02-29", "2032-02-29", "2036-02-29"]


def test_a_half_hour_dst_zone_keeps_its_local_time() -> None:
    # Lord Howe Island moves its clocks by 30 minutes (+10:30 in winter, +11:00 in summer):
    # 5 April 2026 at 02:00 back to 01:30.
    zone = ZoneInfo("Australia/Lord_Howe")
    dates = series(datetime(2026, 4, 3, 8, tzinfo=zone), "FREQ=DAILY;COUNT=4",
                   "Australia/Lord_Howe")
    assert [(d.hour, d.minute) for d in dates] == [(8, 0)] * 4
    offsets = [d.utcoffset().total_seconds() / 3600 for d in dates]  # type: ignore[union-attr]
    assert offsets == [11.0, 11.0, 10.5, 10.5]


def test_count_and_until_end_the_series() -> None:
    start = datetime(2027, 3, 1, 9, tzinfo=UTC)
    assert len(series(start, "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH;COUNT=10", "UTC")) == 10
    weekdays = series(start, "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH;COUNT=10", "UTC")
    assert {d.strftime("%a") for d in weekdays} == {"Mon", "Thu"}
    until = series(start, "FREQ=DAILY;UNTIL=20270305", "Europe/Berlin")
    assert [d.day for d in until] == [1, 2, 3, 4, 5]
    assert next_occurrence(start, "FREQ=DAILY;COUNT=1", "UTC") is None
