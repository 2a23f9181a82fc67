"""The wallboard's Callbacks panel and tiles, read from the callbacks consumer's store.

The wallboard (consumers.wallboard.consumer) adds :meth:`Panel.view` to each snapshot
and asks :meth:`Panel.changed` between deliveries (at most every POLL seconds), so a
task opened, assigned, dialed or closed reaches the page within about a second
without the wallboard consuming anything more.

    callbacks        open tasks, oldest first: who (number, contact), how often they tried,
                     since when, due, state (open, due, overdue), desk, attempts, dial state;
                     then tasks closed in the last RECENT seconds (reached, unreached, closed)
    callback_tiles   callbacks_open, callbacks_overdue, callback_median: the median seconds
                     from missed to reached of the tasks reached today (the board's local day)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.config import Settings
from bridge.events import format_time, parse_time
from consumers.callbacks.tasks import state_of
from consumers.numbers import display

POLL = 0.5  # seconds between looks at the store for changes
RECENT = 600.0  # seconds a closed task stays on the panel
SHOWN = 50  # open tasks shown at most


class Panel:
    """The callbacks part of the wallboard's snapshot; the store is opened when it first exists."""

    def __init__(self, settings: Settings, *, masked: bool = False) -> None:
        self.settings, self.masked = settings, masked
        self._store: Any = None
        self._seen: Any = None
        self._next = 0.0
        self._look_again = 0.0  # no store yet: when to look for it again (not at every snapshot)

    def _rows(self, now: datetime) -> list[dict[str, Any]]:
        if self._store is None:
            if time.monotonic() < self._look_again:
                return []
            from consumers.store.core import open_store

            self._store = open_store(self.settings, "callbacks", existing=True)
            if self._store is None:
                self._look_again = time.monotonic() + POLL
                return []
        since = format_time(now - timedelta(seconds=RECENT))
        rows = self._store.execute(
            "SELECT * FROM callbacks WHERE status = 'open' OR closed_at >= ? ORDER BY first_missed_at, id",
            (since,),
        )
        return [dict(row) for row in rows]

    def changed(self) -> bool:
        """Whether the tasks changed since the last look (looks at most every POLL seconds)."""
        if time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + POLL
        rows = self._rows(datetime.now(UTC))
        seen = [
            (r["id"], r["status"], r["missed_count"], r["desk"], r["attempts"], r["dial_state"]) for r in rows
        ]
        if seen == self._seen:
            return False
        self._seen = seen
        return True

    def view(
        self, now: datetime, day_start: datetime, contact_name: Callable[[str | None], str | None]
    ) -> dict[str, Any]:
        """The panel and tiles at now; day_start: the board's local midnight (for the median)."""
        rows = self._rows(now)
        open_rows = [row for row in rows if row["status"] == "open"]
        shown = open_rows[:SHOWN] + [row for row in rows if row["status"] != "open"]
        reached = []
        if self._store is not None:
            found = self._store.execute(
                "SELECT first_missed_at, reached_at FROM callbacks "
                "WHERE outcome = 'reached' AND reached_at >= ?",
                (format_time(day_start),),
            )
            reached = [
                (parse_time(r["reached_at"]) - parse_time(r["first_missed_at"])).total_seconds()
                for r in found
            ]
        states = [state_of(row, now) for row in open_rows]
        return {
            "callbacks": [self._task(row, now, contact_name) for row in shown],
            "callback_tiles": {
                "callbacks_open": len(open_rows),
                "callbacks_overdue": states.count("overdue"),
                "callback_median": round(statistics.median(reached), 1) if reached else None,
            },
        }

    def _task(
        self, row: dict[str, Any], now: datetime, contact_name: Callable[[str | None], str | None]
    ) -> dict[str, Any]:
        from consumers.wallboard.state import mask

        number = display(row["number_e164"], self.settings.region)
        return {
            "id": row["id"],
            "number": mask(number) if self.masked else number,
            "contact": contact_name(row["number_e164"]),
            "missed": row["missed_count"],
            "missed_desk": row["missed_desk"],
            "first_missed_at": row["first_missed_at"],
            "last_missed_at": row["last_missed_at"],
            "due_at": row["due_at"],
            "state": state_of(row, now),
            "desk": row["desk"],
            "attempts": row["attempts"],
            "dial": "reached" if row["outcome"] == "reached" else row["dial_state"],
            "reached_by": row["reached_by"],
        }

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
