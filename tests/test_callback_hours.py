"""Business hours and due times of callbacks: weekends, lunch breaks, DST changes (zoneinfo)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bridge.errors import ConfigError
from consumers.callbacks.hours import due_at, format_hours, parse_hours

ZURICH = ZoneInfo("Europe/Zurich")
NEW_YORK = ZoneInfo("America/New_York")
OFFICE = parse_hours("business_hours", "Mon-Fri 08:00-18:00")
MINUTES_15 = 15 * 60.0


def local(text: str, zone: ZoneInfo = ZURICH) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def test_without_business_hours_the_sla_is_plain_time() -> None:
    missed = datetime(2026, 11, 28, 23, 55, tzinfo=UTC)  # a Saturday night
    assert due_at(missed, MINUTES_15, None, ZURICH) == datetime(2026, 11, 29, 0, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("missed", "due"),
    [
        ("2026-11-25T10:00", "2026-11-25T10:15"),  # a Wednesday morning: just 15 minutes
        ("2026-11-25T17:55", "2026-11-26T08:10"),  # 5 minutes left today, 10 tomorrow
        ("2026-11-27T17:50", "2026-11-30T08:05"),  # Friday evening: across the weekend to Monday
        ("2026-11-28T11:00", "2026-11-30T08:15"),  # missed on a Saturday: counts from Monday's opening
        ("2026-11-25T06:30", "2026-11-25T08:15"),  # before opening
        ("2026-11-25T18:00", "2026-11-26T08:15"),  # at closing time exactly
    ],
)
def test_due_times_count_only_business_hours(missed: str, due: str) -> None:
    assert due_at(local(missed), MINUTES_15, OFFICE, ZURICH) == local(due).astimezone(UTC)


def test_across_the_spring_dst_weekend_the_due_time_has_the_new_offset() -> None:
    """Zurich moves to summer time on Sunday 29 March 2026: Monday 08:10 is UTC+2, Friday was UTC+1."""
    missed = local("2026-03-27T17:55")
    due = due_at(missed, MINUTES_15, OFFICE, ZURICH)
    assert due == datetime(2026, 3, 30, 6, 10, tzinfo=UTC)
    assert due.astimezone(ZURICH).isoformat() == "2026-03-30T08:10:00+02:00"
    assert missed.utcoffset() != due.astimezone(ZURICH).utcoffset()


def test_across_the_autumn_dst_weekend() -> None:
    """Zurich leaves summer time on Sunday 25 October 2026."""
    due = due_at(local("2026-10-23T17:59"), 3600.0, OFFICE, ZURICH)
    assert due.astimezone(ZURICH).isoformat() == "2026-10-26T08:59:00+01:00"


def test_a_night_that_changes_time_counts_the_hours_that_really_passed() -> None:
    """Open around the clock on the night New York springs forward: 02:00-03:00 never happens."""
    always = parse_hours("business_hours", "Mon-Sun 00:00-24:00")
    missed = local("2026-03-08T01:30", NEW_YORK)
    due = due_at(missed, 3600.0, always, NEW_YORK)
    assert (due - missed).total_seconds() == 3600.0
    assert due.astimezone(NEW_YORK).isoformat() == "2026-03-08T03:30:00-04:00"


def test_a_lunch_break_and_a_saturday_morning() -> None:
    hours = parse_hours("business_hours", "Mon-Fri 08:00-12:00,13:00-17:00; Sat 09:00-12:00")
    assert due_at(local("2026-11-25T11:50"), MINUTES_15, hours, ZURICH) == local(
        "2026-11-25T13:05"
    ).astimezone(UTC)
    assert due_at(local("2026-11-27T16:55"), MINUTES_15, hours, ZURICH) == local(
        "2026-11-28T09:10"
    ).astimezone(UTC)
    assert format_hours(hours).startswith("Mon 08:00-12:00,13:00-17:00; Tue")
    assert format_hours(hours).endswith("Sat 09:00-12:00")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("Mon-Fri", "business_hours: 'Mon-Fri' in 'Mon-Fri' needs days and hours, like Mon-Fri 08:00-18:00"),
        ("Mon-Fri 8-18", "business_hours: '8' in 'Mon-Fri 8-18' is not a time; write it as 08:00"),
        (
            "Mon-Fri 18:00-08:00",
            "business_hours: '18:00-08:00' in 'Mon-Fri 18:00-08:00' ends before it starts",
        ),
        (
            "Mo-Fr 08:00-18:00",
            "business_hours: 'Mo-Fr' in 'Mo-Fr 08:00-18:00' is not a day or range of days; use Mon-Fri or Sat",
        ),
        (
            "Mon 08:00-25:00",
            "business_hours: '25:00' in 'Mon 08:00-25:00' is not a time of day (00:00 to 24:00)",
        ),
    ],
)
def test_bad_business_hours_are_one_line_naming_the_value(value: str, error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_hours("business_hours", value)
    assert str(raised.value) == error


def test_a_range_of_days_may_wrap_the_week() -> None:
    hours = parse_hours("business_hours", "Sat-Mon 10:00-11:00")
    assert hours is not None
    assert [bool(spans) for spans in hours] == [True, False, False, False, False, True, True]
    assert parse_hours("business_hours", "") is None
