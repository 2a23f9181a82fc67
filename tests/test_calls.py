"""The call records' shared rules (consumers.analytics.calls)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge import events
from consumers.analytics.calls import merge, other_party

T0 = datetime(2026, 12, 1, 9, tzinfo=UTC)


def event(kind: str, seconds: float, call_id: str = "0441234567") -> events.CallEvent:
    return events.CallEvent(
        event_id=events.new_event_id(),
        kind=kind,
        direction="outbound",
        call_id=call_id,
        caller_id=None,
        desk="d1",
        extension=None,
        occurred_at=events.format_time(T0 + timedelta(seconds=seconds)),
        argv=(),
    )


def merged(*steps: tuple[str, float]) -> list[dict[str, Any]]:
    """The records of one key after merging steps (kind, seconds after T0) in the order given, newest first."""
    records: list[dict[str, Any]] = []
    for kind, seconds in steps:
        record, index = merge(records, event(kind, seconds))
        if index is None:
            records.insert(0, record)
        else:
            records[index] = record
    return records


def test_events_in_any_order_make_one_record_by_their_times() -> None:
    (record,) = merged(("ended", 40), ("started", 0), ("connected", 12.5))
    assert (record["ring_seconds"], record["talk_seconds"], record["answered"]) == (12.5, 27.5, True)


def test_a_key_dialed_again_opens_a_new_record_once_the_slot_is_taken() -> None:
    later, first = merged(("started", 0), ("ended", 30), ("started", 600), ("connected", 605))
    assert (first["ring_seconds"], first["talk_seconds"], first["answered"]) == (None, None, False)
    assert (later["ring_seconds"], later["answered"]) == (5.0, True)


def test_an_event_out_of_order_with_a_record_opens_its_own() -> None:
    # connected before the record's start cannot be its answer
    assert len(merged(("started", 100), ("connected", 50))) == 2
    # ended before the record's answer neither
    assert len(merged(("connected", 100), ("ended", 50))) == 2


@pytest.mark.parametrize(("hours", "records"), [(11.9, 1), (12.0, 1), (12.01, 2)])
def test_an_event_joins_a_record_only_within_12_hours(hours: float, records: int) -> None:
    assert len(merged(("started", 0), ("ended", hours * 3600))) == records


@pytest.mark.parametrize(
    ("direction", "call_id", "caller_id", "expected"),
    [
        ("inbound", "17", "0791234567", "0791234567"),
        ("inbound", "17", "", ""),  # an anonymous caller (/C:) stays as given: the numbers module reads it
        ("inbound", "17", None, None),  # the start (with the caller) not seen yet: the call id is no number
        ("unknown", "17", "0791234567", "0791234567"),
        ("outbound", "0441234567", None, "0441234567"),  # 3CX makes the number dialed the call id
        ("outbound", "0441234567", "0447654321", "0447654321"),  # a caller id, where given, says it
    ],
)
def test_the_other_party_is_the_caller_else_the_number_dialed(
    direction: str, call_id: str, caller_id: str | None, expected: str | None
) -> None:
    record = {"direction": direction, "call_id": call_id, "caller_id": caller_id}
    assert other_party(record) == expected
