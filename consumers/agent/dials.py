"""The desk's dial records (``<data_dir>/agent.sqlite3``): requested, dialing, dialed, confirmed.

Each change commits at once (autocommit), so a request is on disk as ``dialing``
before the Assistant runs: a redelivery finds it and never dials again. A dialed
request waits for the Assistant's own outbound call event to confirm it
(:meth:`Dials.match`), or turns ``unconfirmed`` when ``confirm_by`` passes.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from bridge import events
from consumers.store.core import open_database

DIALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS dials (
    request_id TEXT PRIMARY KEY,
    number TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    requested_by TEXT,
    received_at TEXT NOT NULL,
    finished_at TEXT
);
"""
# added later; an older agent.sqlite3 gets them at start
DIALS_COLUMNS = {"confirm_by": "REAL", "call_id": "TEXT", "dialed_at": "TEXT"}
CONFIRM_SLACK = 2.0  # seconds an Assistant event may seem to precede the dial (clocks, rounding)


class Dials:
    """The dials table of one desk."""

    def __init__(self, path: Path) -> None:
        self.db = open_database(path, DIALS_SCHEMA)
        known = {row["name"] for row in self.db.execute("PRAGMA table_info(dials)")}
        for column, kind in DIALS_COLUMNS.items():
            if column not in known:
                self.db.execute(f"ALTER TABLE dials ADD COLUMN {column} {kind}")

    def find(self, request_id: str) -> sqlite3.Row | None:
        """The request's status and number, if it was seen before."""
        row: sqlite3.Row | None = self.db.execute(
            "SELECT status, number FROM dials WHERE request_id = ?", (request_id,)
        ).fetchone()
        return row

    def known(self, request_id: str) -> bool:
        found = self.db.execute("SELECT 1 FROM dials WHERE request_id = ?", (request_id,)).fetchone()
        return found is not None

    def record(self, request: events.DialRequest, number: str, status: str, reason: str | None) -> None:
        self.db.execute(
            "INSERT INTO dials (request_id, number, status, reason, requested_by, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (request.request_id, number, status, reason, request.requested_by, events.utc_now()),
        )

    def finish(self, request_id: str, status: str, reason: str | None) -> None:
        self.db.execute(
            "UPDATE dials SET status = ?, reason = ?, finished_at = ? WHERE request_id = ?",
            (status, reason, events.utc_now(), request_id),
        )

    def await_confirmation(self, request_id: str, within: float) -> None:
        """A dialed request waits within seconds for the Assistant's event."""
        self.db.execute(
            "UPDATE dials SET confirm_by = ?, dialed_at = ? WHERE request_id = ?",
            (time.time() + within, events.utc_now(), request_id),
        )

    def match(self, event: events.CallEvent) -> sqlite3.Row | None:
        """The waiting dial an outbound call event of this desk confirms, if any.

        A dial whose number has the call id's digits is preferred; else a started
        event confirms the oldest dial still waiting that was placed before it.
        """
        waiting = self.db.execute(
            "SELECT * FROM dials WHERE status = 'dialed' AND confirm_by IS NOT NULL ORDER BY dialed_at"
        ).fetchall()
        digits = _digits(event.call_id or "")
        match = next((row for row in waiting if digits and _digits(row["number"]) == digits), None)
        if match is None and event.kind == "started":
            moment = events.parse_time(event.occurred_at)
            match = next(
                (
                    row
                    for row in waiting
                    if (moment - events.parse_time(row["dialed_at"])).total_seconds() >= -CONFIRM_SLACK
                ),
                None,
            )
        return match

    def confirm(self, request_id: str, call_id: str) -> None:
        self.db.execute(
            "UPDATE dials SET status = 'confirmed', call_id = ?, finished_at = ? WHERE request_id = ?",
            (call_id, events.utc_now(), request_id),
        )

    def overdue(self) -> list[sqlite3.Row]:
        """The dials whose confirmation did not come in time."""
        return self.db.execute(
            "SELECT * FROM dials WHERE status = 'dialed' AND confirm_by < ?", (time.time(),)
        ).fetchall()

    def recent(self, since: str) -> int:
        """How many requests received since then may have placed a call (for the rate limit)."""
        (count,) = self.db.execute(
            "SELECT COUNT(*) FROM dials WHERE status IN ('dialing', 'dialed', 'confirmed', 'failed') "
            "AND received_at >= ?",
            (since,),
        ).fetchone()
        return int(count)

    def close(self) -> None:
        self.db.close()


def request_of(row: Any) -> events.DialRequest:
    """The request a dials row was made from (enough of it for a result)."""
    return events.DialRequest(
        request_id=row["request_id"], number=row["number"], requested_by=row["requested_by"]
    )


def _digits(text: str) -> str:
    return "".join(character for character in text if character.isdigit())
