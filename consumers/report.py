"""Summaries of the analytics records: per day and per desk.

calls      calls seen (any direction, with ``--direction`` only that one)
answered   calls that connected
missed     calls that ended without connecting
answer_rate  answered / (answered + missed); calls still ringing are not counted
ring avg / p90  seconds from started to connected, over answered calls
talk avg   seconds from connected to ended, over answered, ended calls
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

COLUMNS = ("calls", "answered", "missed", "answer_rate", "ring_avg", "ring_p90", "talk_avg")
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


def load_calls(path: Path, direction: str | None = None) -> list[dict[str, Any]]:
    """Every call record, oldest first."""
    if not path.exists():
        return []
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        rows = connection.execute(
            f"SELECT {', '.join(CALL_COLUMNS)} FROM calls "
            "WHERE (? IS NULL OR direction = ?) "
            "ORDER BY coalesce(started_at, connected_at, ended_at), call_id",
            (direction, direction),
        ).fetchall()
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
    answered = [c for c in calls if c["answered"]]
    missed = [c for c in calls if not c["answered"] and c["ended_at"] is not None]
    rings = [c["ring_seconds"] for c in answered if c["ring_seconds"] is not None]
    talks = [c["talk_seconds"] for c in answered if c["talk_seconds"] is not None]
    decided = len(answered) + len(missed)
    return {
        "calls": len(calls),
        "answered": len(answered),
        "missed": len(missed),
        "answer_rate": round(len(answered) / decided, 4) if decided else None,
        "ring_avg": _avg(rings),
        "ring_p90": _p90(rings),
        "talk_avg": _avg(talks),
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
