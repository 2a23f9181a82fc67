"""The callback columns of ``tcx-bridge report``: per day (UTC, of the first missed call) and per desk.

callbacks_opened     tasks opened (per desk: the desk that missed the caller last)
callbacks_reached    tasks closed reached (per desk: the desk that reached the caller)
callbacks_unreached  tasks closed unreached (per desk: the desk the task was given to last)
callback_median, callback_p90   seconds from the first missed call to the caller reached
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from bridge.events import parse_time
from consumers.analytics.report import Selection, _p90

if TYPE_CHECKING:
    from consumers.store.core import Store

CALLBACK_COLUMNS = (
    "callbacks_opened",
    "callbacks_reached",
    "callbacks_unreached",
    "callback_median",
    "callback_p90",
)


def _empty() -> dict[str, Any]:
    return {"callbacks_opened": 0, "callbacks_reached": 0, "callbacks_unreached": 0, "seconds": []}


def callback_summary(store: Store | None, selection: Selection) -> dict[str, dict[str, dict[str, Any]]]:
    """{"by_day": {day: columns}, "by_desk": {desk: columns}} of the tasks first missed in the selection."""
    groups: dict[str, dict[str, dict[str, Any]]] = {
        "by_day": defaultdict(_empty),
        "by_desk": defaultdict(_empty),
    }
    rows = [] if store is None else store.execute("SELECT * FROM callbacks ORDER BY id").fetchall()
    for row in rows:
        missed = row["first_missed_at"]
        if (selection.since and missed < selection.since) or (selection.until and missed >= selection.until):
            continue
        day = parse_time(missed).date().isoformat()
        seconds = None
        if row["outcome"] == "reached":
            seconds = (parse_time(row["reached_at"]) - parse_time(missed)).total_seconds()
        counted = {
            "callbacks_opened": row["missed_desk"],
            "callbacks_reached": row["reached_by"] if row["outcome"] == "reached" else None,
            "callbacks_unreached": (row["desk"] or "-") if row["outcome"] == "unreached" else None,
        }
        for column, desk in counted.items():
            if column == "callbacks_opened" or desk is not None:
                groups["by_day"][day][column] += 1
            if desk is not None and (not selection.desks or desk in selection.desks):
                groups["by_desk"][desk][column] += 1
        if seconds is not None:
            groups["by_day"][day]["seconds"].append(seconds)
            if not selection.desks or row["reached_by"] in selection.desks:
                groups["by_desk"][row["reached_by"]]["seconds"].append(seconds)
    return {group: {key: _columns(value) for key, value in found.items()} for group, found in groups.items()}


def _columns(found: dict[str, Any]) -> dict[str, Any]:
    seconds = found.pop("seconds")
    median = round(statistics.median(seconds), 3) if seconds else None
    p90 = _p90(seconds)
    return {**found, "callback_median": median, "callback_p90": None if p90 is None else round(p90, 3)}


def add_callbacks(
    summary: dict[str, list[dict[str, Any]]], callbacks: dict[str, dict[str, dict[str, Any]]]
) -> None:
    """The callback columns added to each row of the report's summary (rows only callbacks have, too)."""
    for group, key in (("by_day", "day"), ("by_desk", "desk")):
        rows = {row[key]: row for row in summary[group]}
        for name, columns in callbacks[group].items():
            if name not in rows:
                rows[name] = {key: name}
            rows[name].update(columns)
        for row in rows.values():
            for column in CALLBACK_COLUMNS:
                row.setdefault(column, 0 if column.startswith("callbacks_") else None)
        summary[group] = [rows[name] for name in sorted(rows)]
