"""Summaries of the analytics records: per day and per desk.

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
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bridge.text import printable

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


def read_only(path: Path) -> sqlite3.Connection:
    """A store opened for reading, with a one-line error when it cannot be."""
    from bridge.errors import ConfigError

    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        connection.execute("SELECT 1 FROM sqlite_master LIMIT 1")
    except sqlite3.Error as error:
        raise ConfigError(
            f"store {str(path)!r} cannot be read ({error}); check the data dir and its rights"
        ) from None
    connection.row_factory = sqlite3.Row
    return connection


def load_calls(
    path: Path,
    direction: str | None = None,
    *,
    since: str | None = None,
    until: str | None = None,
    desks: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Call records (of a direction, started in [since, until), of desks), oldest first."""
    from bridge.errors import check_directory

    check_directory(path.parent)
    if not path.exists():
        return []
    desks = list(desks)
    connection = read_only(path)
    try:
        rows = connection.execute(
            f"SELECT {', '.join(CALL_COLUMNS)} FROM calls "
            "WHERE (? IS NULL OR direction = ?) "
            "AND (? IS NULL OR coalesce(started_at, connected_at, ended_at) >= ?) "
            "AND (? IS NULL OR coalesce(started_at, connected_at, ended_at) < ?) "
            f"AND ({'1' if not desks else 'desk IN (' + ', '.join('?' * len(desks)) + ')'}) "
            "ORDER BY coalesce(started_at, connected_at, ended_at), call_id",
            (direction, direction, since, since, until, until, *desks),
        ).fetchall()
    except sqlite3.Error as error:
        from bridge.errors import ConfigError

        raise ConfigError(f"store {str(path)!r} cannot be read: {error}") from None
    finally:
        connection.close()
    return [{**dict(row), "answered": bool(row["answered"])} for row in rows]


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def _avg(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def summarise(calls: Iterable[dict[str, Any]]) -> dict[str, Any]:
    calls = list(calls)
    inbound = [c for c in calls if c["direction"] != "outbound"]
    outbound = [c for c in calls if c["direction"] == "outbound"]
    answered = [c for c in inbound if c["answered"]]
    missed = [c for c in inbound if not c["answered"] and c["ended_at"] is not None]
    rings = [c["ring_seconds"] for c in answered if c["ring_seconds"] is not None]
    talks = [c["talk_seconds"] for c in answered if c["talk_seconds"] is not None]
    connected = [c for c in outbound if c["answered"]]
    decided = len(answered) + len(missed)
    return {
        "calls": len(calls),
        "answered": len(answered),
        "missed": len(missed),
        "answer_rate": round(len(answered) / decided, 4) if decided else None,
        "ring_avg": _avg(rings),
        "ring_p90": _p90(rings),
        "talk_avg": _avg(talks),
        "dialed": len(outbound),
        "connected": len(connected),
        "out_talk_avg": _avg([c["talk_seconds"] for c in connected if c["talk_seconds"] is not None]),
    }


def day_of(call: dict[str, Any]) -> str:
    moment = call["started_at"] or call["connected_at"] or call["ended_at"] or ""
    return str(moment)[:10]


def report(calls: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """{"by_day": [...], "by_desk": [...]}: one summary row per day (UTC) and per desk."""
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_desk: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        by_day[day_of(call)].append(call)
        by_desk[call["desk"]].append(call)
    return {
        "by_day": [{"day": day, **summarise(group)} for day, group in sorted(by_day.items())],
        "by_desk": [{"desk": desk, **summarise(group)} for desk, group in sorted(by_desk.items())],
    }


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
    """A row for CSV: every string with its control characters made visible."""
    return {key: printable(value) if isinstance(value, str) else value for key, value in row.items()}


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
