"""Call records built from call events in any order, stored in SQLite.

A call is identified by desk, direction and call_id. For outbound calls 3CX may
use the dialed number as call_id, so one key can hold several calls over time:
an event joins the newest record of its key whose slot for it is still empty and
whose times stay in order (started <= connected <= ended) within 12 hours;
otherwise it starts a new record. Times come from ``occurred_at``, never from
the arrival order, so the record is right whatever order the events arrive in.

    ring_seconds  started -> connected (null when not answered)
    talk_seconds  connected -> ended   (null when not answered or not ended yet)
    answered      connected_at is known
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.config import Settings
from bridge.events import CALL_EVENT_DECODER, CallEvent, parse_time
from consumers.runtime import Binding, Consumer, Context
from consumers.store import first_time

WINDOW_SECONDS = 12 * 3600
CALL_PATTERNS = ("call.started.#", "call.connected.#", "call.ended.#")
SLOTS = {"started": "started_at", "connected": "connected_at", "ended": "ended_at"}

CALLS_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    desk TEXT NOT NULL,
    direction TEXT NOT NULL,
    call_id TEXT NOT NULL,
    caller_id TEXT,
    extension TEXT,
    started_at TEXT,
    connected_at TEXT,
    ended_at TEXT,
    ring_seconds REAL,
    talk_seconds REAL,
    answered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS calls_key ON calls (desk, direction, call_id);
CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at);
"""


def _seconds(start: str | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    return round((parse_time(end) - parse_time(start)).total_seconds(), 6)


def _fits(record: sqlite3.Row, slot: str, moment: datetime) -> bool:
    if record[slot] is not None:
        return False
    times = {name: parse_time(record[name]) for name in SLOTS.values() if record[name] is not None}
    if any(abs((moment - other).total_seconds()) > WINDOW_SECONDS for other in times.values()):
        return False
    order = list(SLOTS.values())
    position = order.index(slot)
    before = [times[name] for name in order[:position] if name in times]
    after = [times[name] for name in order[position + 1 :] if name in times]
    return all(other <= moment for other in before) and all(moment <= other for other in after)


def apply_event(connection: sqlite3.Connection, event: CallEvent) -> dict[str, Any]:
    """Merge one started/connected/ended event into its call record; return the record.

    Runs inside the caller's transaction.
    """
    slot = SLOTS[event.kind]
    moment = parse_time(event.occurred_at)
    candidates = connection.execute(
        "SELECT * FROM calls WHERE desk = ? AND direction = ? AND call_id = ? ORDER BY id DESC LIMIT 20",
        (event.desk, event.direction, event.call_id),
    ).fetchall()
    record = next((row for row in candidates if _fits(row, slot, moment)), None)
    merged: dict[str, Any] = (
        dict(record)
        if record is not None
        else {
            "id": None,
            "desk": event.desk,
            "direction": event.direction,
            "call_id": event.call_id,
            "caller_id": None,
            "extension": event.extension,
            **dict.fromkeys(SLOTS.values()),
        }
    )
    merged[slot] = event.occurred_at
    if event.kind == "started" and event.caller_id is not None:
        merged["caller_id"] = event.caller_id
    merged["ring_seconds"] = _seconds(merged["started_at"], merged["connected_at"])
    merged["talk_seconds"] = _seconds(merged["connected_at"], merged["ended_at"])
    merged["answered"] = merged["connected_at"] is not None
    values = {**merged, "answered": int(merged["answered"])}
    if record is None:
        columns = [name for name in values if name != "id"]
        cursor = connection.execute(
            f"INSERT INTO calls ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})", values
        )
        merged["id"] = cursor.lastrowid
    else:
        changed = ("caller_id", *SLOTS.values(), "ring_seconds", "talk_seconds", "answered")
        assignments = ", ".join(f"{name} = :{name}" for name in changed)
        connection.execute(f"UPDATE calls SET {assignments} WHERE id = :id", values)
    return merged


class CallConsumer(Consumer):
    """Base of the consumers that keep call records: bound to the call events, duplicates dropped.

    handle() merges each new event into its record (in the runtime's batch
    transaction, with the event id) and passes the record to on_record().
    """

    database: sqlite3.Connection

    @classmethod
    def bindings(cls, settings: Settings) -> Sequence[Binding]:
        return [Binding(settings.exchange, pattern) for pattern in CALL_PATTERNS]

    def decode(self, body: bytes, routing_key: str) -> Any:
        return CALL_EVENT_DECODER.decode(body)

    def handle(self, message: Any, context: Context) -> str:
        event: CallEvent = message
        if event.kind == "invalid" or event.call_id is None:
            return "ignored"
        if not first_time(self.database, event.event_id):
            return "duplicate"
        return self.on_record(event, apply_event(self.database, event), context)

    def on_record(self, event: CallEvent, record: dict[str, Any], context: Context) -> str:
        """React to an updated call record; return the outcome for the log line."""
        return "recorded"

    def close(self) -> None:
        self.database.close()
