"""The wire format of call events: fields, timestamps, routing keys."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from bridge import events
from bridge.config import Settings, load_settings
from bridge.notify import build_event, to_message


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A desk's settings; no broker needed here."""
    environ = {
        "TCX_BRIDGE_DESK": "desk-1",
        "TCX_BRIDGE_EXTENSION": "101",
        "TCX_BRIDGE_DATA_DIR": str(tmp_path),
    }
    return load_settings(environ=environ, read_file=False).settings


def test_event_body_has_the_contract_fields(settings: Settings) -> None:
    event, problems = build_event(["/N:S", "/C:0791234567", "/T:I", "/I:42"], settings)
    body = json.loads(events.ENCODER.encode(event))
    assert problems == []
    assert body["type"] == "call"
    assert body["schema_version"] == 1
    assert body["kind"] == "started"
    assert body["direction"] == "inbound"
    assert body["call_id"] == "42"
    assert body["caller_id"] == "0791234567"
    assert body["desk"] == settings.desk
    assert body["extension"] == "101"
    assert body["argv"] == ["/N:S", "/C:0791234567", "/T:I", "/I:42"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", body["occurred_at"])
    assert body["reason"] is None


def test_event_ids_are_unique(settings: Settings) -> None:
    ids = {build_event(["/N:E", "/T:I", "/I:1"], settings)[0].event_id for _ in range(100)}
    assert len(ids) == 100


def test_invalid_launch_keeps_what_it_could_read(settings: Settings) -> None:
    event, problems = build_event(["/N:Z", "/C:555", "/I:9"], settings)
    assert event.kind == "invalid"
    assert event.routing_key == f"call.invalid.{settings.desk}"
    assert event.call_id == "9"
    assert event.caller_id == "555"
    assert event.reason == problems[0] == "unknown notification type /N:'Z'; expected S, C or E"


def test_message_properties(settings: Settings) -> None:
    event, _ = build_event(["/N:C", "/T:O", "/I:7"], settings)
    message = to_message(event)
    assert message.routing_key == f"call.connected.outbound.{settings.desk}"
    assert message.message_id == event.event_id
    assert message.type == "call.connected"
    assert abs(message.timestamp - datetime.now(UTC).timestamp()) < 5


def test_time_format_always_has_microseconds() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert events.format_time(moment) == "2026-01-02T03:04:05.000000Z"
    assert events.parse_time("2026-01-02T03:04:05.000000Z") == moment


def test_decoder_ignores_fields_from_newer_producers() -> None:
    body = (
        b'{"type":"call","schema_version":2,"event_id":"e","kind":"ended","direction":"inbound",'
        b'"call_id":"1","caller_id":null,"desk":"d","extension":null,'
        b'"occurred_at":"2026-01-02T03:04:05.000000Z","argv":[],"new_field":true}'
    )
    event = events.EVENT_DECODER.decode(body)
    assert isinstance(event, events.CallEvent)
    assert event.schema_version == 2


# a possible date and offset whose UTC time is outside years 1 to 9999
@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01"])
def test_a_time_out_of_range_in_utc_is_invalid_not_a_crash(stamp: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{stamp!r} is out of the range of dates in UTC")):
        events.canonical_time(stamp)
    body = f'{{"request_id": "r", "number": "1", "expires_at": "{stamp}"}}'.encode()
    with pytest.raises(msgspec.ValidationError, match="out of the range of dates"):
        events.DIAL_REQUEST_DECODER.decode(body)


@pytest.mark.parametrize(
    ("desk", "problem"),
    [
        ("DESK-07_a", None),
        ("d" * events.MAX_DESK, None),
        ("d" * (events.MAX_DESK + 1), "has 65 characters, over the maximum of 64; give a shorter desk id"),
        ("a.b", "holds '.', not allowed in a desk id; use only A-Za-z0-9_-"),
        ("", "is empty; give a desk id of 1 to 64 of A-Za-z0-9_-"),
    ],
)
def test_desk_problem(desk: str, problem: str | None) -> None:
    assert events.desk_problem(desk) == problem


def test_an_event_id_is_a_random_uuid_4_in_its_usual_form() -> None:
    import uuid

    made = {events.new_event_id() for _ in range(1000)}
    assert len(made) == 1000
    for text in made:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
