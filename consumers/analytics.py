"""The analytics consumer: one record per call in ``<data_dir>/analytics.sqlite3``.

``tcx-bridge consume analytics``; queue ``tcx.analytics`` bound to
``call.started.#``, ``call.connected.#`` and ``call.ended.#``. The record is
merged from the events by ``occurred_at`` (see consumers.calls), and the event id
is recorded in the same transaction, so a duplicate changes nothing.
"""

from __future__ import annotations

from pathlib import Path

from bridge.config import Settings
from consumers.calls import CALLS_SCHEMA, CallConsumer
from consumers.store import open_database


def database_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "analytics.sqlite3"


class Analytics(CallConsumer):
    """One record per call: ring and talk times, missed calls."""

    name = "analytics"

    def __init__(self, settings: Settings) -> None:
        self.database = open_database(database_path(settings), CALLS_SCHEMA)
