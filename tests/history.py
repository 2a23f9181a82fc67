"""Call events for the history tests: answered inbound calls published straight to the events exchange."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bridge import events
from bridge.config import Settings
from bridge.envelope import OutgoingMessage
from bridge.topology import publish_event
from bridge.transport import Broker
from consumers.store.core import open_store, sqlite_path
from tests.conftest import free_port_in

SEC = timedelta(seconds=1)
T0 = datetime(2026, 11, 2, 8, 0, 0, tzinfo=UTC)


def call_events(
    settings: Settings, number: int, *, desk: str | None = None, base: datetime = T0, every: float = 60
) -> list[OutgoingMessage]:
    """An answered inbound call's S, C and E (ring 2 s, talk 8 s), every seconds after the one before."""
    start = base + number * every * SEC
    found = []
    for kind, at in (("started", start), ("connected", start + 2 * SEC), ("ended", start + 10 * SEC)):
        event = events.CallEvent(
            event_id=events.new_event_id(),
            kind=kind,  # type: ignore[arg-type]
            direction="inbound",
            call_id=f"c{number:04}",
            caller_id="0791234567" if kind == "started" else None,
            desk=desk or settings.desk,
            extension="101",
            occurred_at=events.format_time(at),
            argv=(),
        )
        body = events.ENCODER.encode(event)
        found.append(OutgoingMessage(event.routing_key, body, event.event_id, f"call.{kind}", 0))
    return found


def send_calls(broker: Broker, settings: Settings, numbers: range, **kwargs: Any) -> None:
    for number in numbers:
        for message in call_events(settings, number, **kwargs):
            publish_event(broker, settings, message)


def stored(settings: Settings, sql: str) -> list[dict[str, Any]]:
    if not settings.store_url and not sqlite_path(settings, "analytics").exists():
        return []
    store = open_store(settings, "analytics")
    try:
        return [dict(row) for row in store.execute(sql)]
    finally:
        store.close()


def processed(settings: Settings) -> int:
    rows = stored(settings, "SELECT count(*) AS n FROM processed")
    return int(rows[0]["n"]) if rows else 0


def offsets(settings: Settings) -> list[dict[str, Any]]:
    return stored(settings, "SELECT * FROM stream_offsets")


def http_port() -> int:
    """A free port of this suite's HTTP range (18000-18049), for a server the test starts."""
    return free_port_in(range(18000, 18050))
