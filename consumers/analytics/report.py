"""Summaries of the analytics records: per day and per desk, from the ``calls_daily`` view.

calls      calls seen (any direction, with ``--direction`` only that one)
answered   inbound calls that connected
missed     inbound calls that ended without connecting
answer_rate  answered / (answered + missed), inbound; calls still ringing are not counted
ring avg / p90  seconds from started to connected, over answered inbound calls
talk avg   seconds from connected to ended, over answered, ended inbound calls
dialed     outbound calls;  connected: those that connected;  out_talk_avg: their talk time
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from bridge.text import csv_cell, printable

if TYPE_CHECKING:
    from consumers.store.core import Store

CELL_WIDTH = 40  # characters of a table cell; longer values end in an ellipsis

COLUMNS = (
    "calls",
    "answered",
    "missed",
    "answer_rate",
    "ring_avg",
    "ring_p90",
    "talk_avg",
    "dialed",
    "connected",
    "out_talk_avg",
)
CALL_COLUMNS = (
    "desk",
    "direction",
    "call_id",
    "caller_id",
    "started_at",
    "connected_at",
    "ended_at",
    "ring_seconds",
    "talk_seconds",
    "answered",
)


def time_range(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """--since/--until as wire timestamps; a bare day means its start (since) or its end (until)."""
    return _moment(since, "--since", end=False), _moment(until, "--until", end=True)


def _moment(value: str | None, option: str, *, end: bool) -> str | None:
    from datetime import UTC, date, datetime, timedelta

    from bridge.errors import ConfigError
    from bridge.events import canonical_time, format_time

    if value is None:
        return None
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        try:
            return canonical_time(value.strip())
        except ValueError:
            raise ConfigError(f"{option} {value!r} is not a day (2026-11-02) or an RFC 3339 time") from None
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + (timedelta(days=1) if end else timedelta())
    return format_time(moment)


FIRST_MOMENT = "coalesce(started_at, connected_at, ended_at)"
MICRO = 1_000_000  # calls_daily sums times in whole microseconds (exact on both backends)


class Selection(NamedTuple):
    """Which calls a report reads: of a direction, from since to until (wire times), at desks."""

    direction: str | None = None
    since: str | None = None
    until: str | None = None
    desks: tuple[str, ...] = ()

    def where(self, moment: str = FIRST_MOMENT, *, also: str = "") -> tuple[str, list[Any]]:
        """A WHERE clause (or "") with its parameters; moment is the time column since/until bound."""
        terms, params = [], []
        for term, value in (
            ("direction = ?", self.direction),
            (f"{moment} >= ?", self.since),
            (f"{moment} < ?", self.until),
        ):
            if value is not None:
                terms.append(term)
                params.append(value)
        if self.desks:
            terms.append(f"desk IN ({', '.join('?' * len(self.desks))})")
            params += self.desks
        if also:
            terms.append(also)
        return ("WHERE " + " AND ".join(terms) if terms else ""), params


EVERYTHING = Selection()


def load_calls(store: Store | None, selection: Selection = EVERYTHING) -> list[dict[str, Any]]:
    """The selected call records, oldest first."""
    if store is None:
        return []
    where, params = selection.where()
    rows = store.execute(
        f"SELECT {', '.join(CALL_COLUMNS)} FROM calls {where} ORDER BY {FIRST_MOMENT}, call_id", params
    )
    return [{**dict(row), "answered": bool(row["answered"])} for row in rows]


def daily_rows(store: Store, selection: Selection = EVERYTHING) -> list[dict[str, Any]]:
    """Rows of the calls_daily view (docs/store.md) over the selected calls.

    Without a direction or a time range it is the view itself; with them, the
    view's own query over the selected calls.
    """
    from consumers.store.schema import daily_select

    where, params = selection.where()
    if selection._replace(desks=()) == EVERYTHING:
        query = f"SELECT * FROM calls_daily {where}"
    else:
        query = daily_select(store.dialect, "calls", where)
    return [{**dict(row), "day": str(row["day"])} for row in store.execute(query, params)]


def _ring_values(store: Store, selection: Selection) -> list[dict[str, Any]]:
    from consumers.store.schema import DIALECT_TERMS, INBOUND_ANSWERED

    where, params = selection.where(also=f"{INBOUND_ANSWERED} AND ring_seconds IS NOT NULL")
    day = DIALECT_TERMS[store.dialect]["day"]
    rows = store.execute(f"SELECT {day} AS day, desk, ring_seconds FROM calls {where}", params)
    return [{**dict(row), "day": str(row["day"])} for row in rows]


def daily_report(store: Store | None, selection: Selection = EVERYTHING) -> dict[str, list[dict[str, Any]]]:
    """{"by_day": [...], "by_desk": [...]}: calls_daily summed per day (UTC) and per desk."""
    if store is None:
        return {"by_day": [], "by_desk": []}
    rows = daily_rows(store, selection)
    rings = _ring_values(store, selection)
    found: dict[str, list[dict[str, Any]]] = {}
    for group, key in (("by_day", "day"), ("by_desk", "desk")):
        parts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        values: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            parts[row[key]].append(row)
        for ring in rings:
            values[ring[key]].append(ring["ring_seconds"])
        found[group] = [{key: name, **rollup(parts[name], values[name])} for name in sorted(parts)]
    return found


def _ratio(a: float, b: float, digits: int) -> float | None:
    return round(a / b, digits) if b else None


def rollup(rows: list[dict[str, Any]], rings: list[float]) -> dict[str, Any]:
    """One summary (COLUMNS) from calls_daily rows and the ring times of their answered inbound calls."""

    def total(column: str) -> Any:
        return sum(row[column] for row in rows)

    answered, missed = total("inbound_answered"), total("inbound_missed")
    return {
        "calls": total("calls"),
        "answered": answered,
        "missed": missed,
        "answer_rate": _ratio(answered, answered + missed, 4),
        "ring_avg": _ratio(total("ring_microseconds_sum"), total("ring_count") * MICRO, 3),
        "ring_p90": _p90(rings),
        "talk_avg": _ratio(total("talk_microseconds_sum"), total("talk_count") * MICRO, 3),
        "dialed": total("outbound_dialed"),
        "connected": total("outbound_connected"),
        "out_talk_avg": _ratio(
            total("outbound_talk_microseconds_sum"), total("outbound_talk_count") * MICRO, 3
        ),
    }


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def render_table(rows: list[dict[str, Any]], columns: Iterable[str]) -> str:
    """A plain text table with a header line."""
    columns = list(columns)
    cells = [[_cell(column, row.get(column)) for column in columns] for row in rows]
    widths = [max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(widths[i]) for i, column in enumerate(columns))]
    lines.append("  ".join("-" * width for width in widths))
    lines += [
        "  ".join(value.rjust(widths[i]) if i else value.ljust(widths[i]) for i, value in enumerate(line))
        for line in cells
    ]
    return "\n".join(lines)


def safe_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row for CSV: every string with its control characters made visible, no cell a formula."""
    return {key: csv_cell(value) for key, value in row.items()}


def _cell(column: str, value: Any) -> str:
    if isinstance(value, str):
        return printable(value, CELL_WIDTH)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if column == "answer_rate":
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
