"""The analytics consumer: one record per call in ``<data_dir>/analytics.sqlite3``.

``tcx-bridge consume analytics``; queue ``tcx.analytics`` bound to
``call.started.#``, ``call.connected.#`` and ``call.ended.#``. The record is
merged from the events by ``occurred_at`` (see consumers.calls), and the event id
is recorded in the same transaction, so a duplicate changes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge import events
from bridge.config import Settings
from consumers.calls import CALLS_SCHEMA, apply_event
from consumers.runtime import Binding, Consumer, Context
from consumers.store import first_time, open_database

CALL_PATTERNS = ("call.started.#", "call.connected.#", "call.ended.#")


def database_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "analytics.sqlite3"


class Analytics(Consumer):
    name = "analytics"

    def __init__(self, settings: Settings) -> None:
        self.database: sqlite3.Connection = open_database(database_path(settings), CALLS_SCHEMA)

    @classmethod
    def bindings(cls, settings: Settings) -> Sequence[Binding]:
        return [Binding(settings.exchange, pattern) for pattern in CALL_PATTERNS]

    def decode(self, body: bytes, routing_key: str) -> Any:
        return events.CALL_EVENT_DECODER.decode(body)

    def handle(self, message: Any, context: Context) -> str:
        event: events.CallEvent = message
        if event.kind == "invalid" or event.call_id is None:
            return "ignored"
        db = self.database  # the runtime's batch transaction is open
        if not first_time(db, event.event_id):
            return "duplicate"
        apply_event(db, event)
        return "recorded"

    def close(self) -> None:
        self.database.close()
