"""Business hours (``business_hours``) and the due time of a callback counted in them.

``"Mon-Fri 08:00-18:00"``; several spans with ``;`` (``"Mon-Fri 08:00-12:00,13:00-17:00; Sat 09:00-12:00"``);
``24:00`` ends a day. Times are wall-clock times of the ``timezone`` setting: an interval is the
real time between its two local moments, so a day that changes to or from daylight saving time
counts what really passed. No I/O.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import NamedTuple

from bridge.errors import ConfigError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_DAYS = 400  # a due time is found within this many days (a week always holds an open hour)


class Span(NamedTuple):
    """One open span of a weekday, as (hour, minute) pairs; end (24, 0) is midnight after the day."""

    start: tuple[int, int]
    end: tuple[int, int]


class Hours(tuple[tuple[Span, ...], ...]):
    """Seven weekdays from Monday, each its open spans, sorted; shown as business_hours would give them."""

    def __str__(self) -> str:
        return format_hours(self)


def _clock(name: str, text: str, whole: str) -> tuple[int, int]:
    hour, colon, minute = text.partition(":")
    if not colon or not hour.isdigit() or not minute.isdigit() or len(minute) != 2:
        raise ConfigError(f"{name}: {text!r} in {whole!r} is not a time; write it as 08:00")
    found = (int(hour), int(minute))
    if found != (24, 0) and not (found[0] < 24 and found[1] < 60):
        raise ConfigError(f"{name}: {text!r} in {whole!r} is not a time of day (00:00 to 24:00)")
    return found


def _days(name: str, text: str, whole: str) -> list[int]:
    found: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().lower().partition("-")
        try:
            start = DAYS.index(first.strip()[:3])
            end = DAYS.index(last.strip()[:3]) if dash else start
        except ValueError:
            raise ConfigError(
                f"{name}: {part.strip()!r} in {whole!r} is not a day or range of days; use Mon-Fri or Sat"
            ) from None
        found += [(start + step) % 7 for step in range((end - start) % 7 + 1)]
    return found


def parse_hours(name: str, value: object) -> Hours | None:
    """``business_hours``: None (unset: every hour counts) or the open spans of each weekday."""
    if value is None or not str(value).strip():
        return None
    whole = str(value).strip()
    week: list[list[Span]] = [[] for _ in DAYS]
    for group in whole.split(";"):
        days, _, spans = group.strip().partition(" ")
        if not spans.strip():
            raise ConfigError(
                f"{name}: {group.strip()!r} in {whole!r} needs days and hours, like Mon-Fri 08:00-18:00"
            )
        for text in spans.split(","):
            start, dash, end = text.strip().partition("-")
            if not dash:
                raise ConfigError(
                    f"{name}: {text.strip()!r} in {whole!r} is not a span of hours like 08:00-18:00"
                )
            span = Span(_clock(name, start.strip(), whole), _clock(name, end.strip(), whole))
            if span.start >= span.end:
                raise ConfigError(f"{name}: {text.strip()!r} in {whole!r} ends before it starts")
            for day in _days(name, days, whole):
                week[day].append(span)
    return Hours(tuple(sorted(spans)) for spans in week)


def format_hours(hours: Hours | None) -> str:
    """The spans as business_hours would give them, one weekday at a time (for ``config``)."""
    if hours is None:
        return ""
    parts = []
    for day, spans in zip(DAYS, hours, strict=True):
        if spans:
            text = ",".join(f"{s[0]:02d}:{s[1]:02d}-{e[0]:02d}:{e[1]:02d}" for s, e in spans)
            parts.append(f"{day.title()} {text}")
    return "; ".join(parts)


def _moment(day: date, clock: tuple[int, int], zone: tzinfo) -> datetime:
    if clock == (24, 0):
        return datetime.combine(day + timedelta(days=1), time(0, 0), zone).astimezone(UTC)
    return datetime.combine(day, time(*clock), zone).astimezone(UTC)


def due_at(start: datetime, seconds: float, hours: Hours | None, zone: tzinfo) -> datetime:
    """start + seconds, counting only the open spans of hours (all the time when None), in UTC.

    A call missed outside the hours starts counting when they open next.
    """
    start = start.astimezone(UTC)
    if hours is None:
        return start + timedelta(seconds=seconds)
    left = timedelta(seconds=seconds)
    day = start.astimezone(zone).date() - timedelta(days=1)  # a span of the day before may still be open
    for _ in range(MAX_DAYS):
        for span in hours[day.weekday()]:
            opens, closes = _moment(day, span.start, zone), _moment(day, span.end, zone)
            begin = max(opens, start)
            if begin >= closes:
                continue
            if begin + left <= closes:
                return begin + left
            left -= closes - begin
        day += timedelta(days=1)
    raise ConfigError(f"business_hours {format_hours(hours)!r} has no open hour; give at least one span")
