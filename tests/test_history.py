"""The history's pieces without a broker: offsets, windows, filters, topic patterns, the retention setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge import events
from bridge.config import load_settings
from bridge.envelope import Delivery
from bridge.errors import ConfigError
from bridge.history import (
    CALL_WINDOW,
    COLUMNS,
    SLACK,
    Entry,
    Query,
    as_line,
    as_row,
    decode,
    parse_moment,
    parse_offset,
    stream_argument,
)
from bridge.topology import history_arguments
from consumers.runtime.backfill import topic_matches

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("first", "first"),
        ("last", "last"),
        ("next", "next"),
        ("12345", 12345),
        ("2026-11-02T09:00:00Z", datetime(2026, 11, 2, 9, tzinfo=UTC)),
        ("2026-11-02T10:00:00+01:00", datetime(2026, 11, 2, 9, tzinfo=UTC)),  # an offset: to UTC
        ("2026-11-02", datetime(2026, 11, 2, tzinfo=UTC)),  # a day: its start, UTC
    ],
)
def test_from_takes_a_keyword_an_offset_or_a_time(text: str, offset: object) -> None:
    assert parse_offset(text) == offset


@pytest.mark.parametrize("text", ["yesterday", "-5", "2026-11-02T09:00:00", "1.5", ""])
def test_a_bad_from_names_the_value(text: str) -> None:
    with pytest.raises(ConfigError, match=f"--from: {text!r} is not a stream offset"):
        parse_offset(text)


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ConfigError, match="has no time zone"):
        parse_moment("2026-11-02T09:00:00", "--since")


def test_a_moment_goes_to_the_broker_in_whole_seconds() -> None:
    assert stream_argument(datetime(2026, 11, 2, 9, 0, 0, 750_000, tzinfo=UTC)) == datetime(
        2026, 11, 2, 9, tzinfo=UTC
    )


def test_where_a_query_starts_reading() -> None:
    since = datetime(2026, 11, 2, 9, tzinfo=UTC)
    assert Query(since=since).start(NOW) == since - SLACK  # a timestamp offset, never "first"
    assert Query(call="1-7").start(NOW) == NOW - CALL_WINDOW  # --call alone: the last day
    assert Query(call="1-7", since=since).start(NOW) == since - SLACK
    assert Query().start(NOW) == "first"


def entry(kind: str, *, desk: str = "d1", call: str = "c1", at: datetime = NOW) -> Entry:
    event = events.CallEvent(
        event_id=events.new_event_id(),
        kind=kind,  # type: ignore[arg-type]
        direction="inbound",
        call_id=call,
        caller_id="0791234567",
        desk=desk,
        extension=None,
        occurred_at=events.format_time(at),
        argv=(),
    )
    body = events.ENCODER.encode(event)
    delivery = Delivery(
        body=body,
        routing_key=event.routing_key,
        exchange="tcx.events",
        delivery_tag=1,
        redelivered=False,
        message_id=event.event_id,
        type="call",
        headers={"x-stream-offset": 7},
    )
    return Entry(7, delivery, event)


def test_a_query_keeps_its_desk_call_and_range() -> None:
    assert Query(desk="d1").keeps(entry("started"))
    assert not Query(desk="d2").keeps(entry("started"))
    assert not Query(call="c2").keeps(entry("started"))
    hour = timedelta(hours=1)
    assert Query(since=NOW - hour, until=NOW + hour).keeps(entry("started"))
    assert not Query(since=NOW + hour).keeps(entry("started"))  # read from before since, dropped here
    assert not Query(until=NOW - hour).keeps(entry("started"))
    unreadable = entry("started")._replace(event=None)
    assert Query().keeps(unreadable)
    assert not Query(desk="d1").keeps(unreadable)


def test_a_row_says_what_happened() -> None:
    assert as_row(entry("started")) == (
        "7",
        events.format_time(NOW),
        "call.started.inbound",
        "d1",
        "c1",
        "0791234567",
        "",
    )


def test_the_tables_columns_line_up_whatever_the_cells_lengths() -> None:
    short = entry("started")
    other = entry("ended", desk="desk-12", call="0441234567-998")._replace(offset=123456)
    lines = [as_line(COLUMNS), as_line(as_row(short)), as_line(as_row(other))]
    for column in ("occurred_at", "what", "desk", "call_id", "number"):
        starts = {line.index(cell) for line, cell in zip(lines, cells(column, short, other), strict=True)}
        assert len(starts) == 1, (column, lines)


def cells(column: str, *found: Entry) -> list[str]:
    at = COLUMNS.index(column)
    return [column, *(as_row(one)[at] for one in found)]


def test_a_callback_event_in_the_history_reads_as_a_row_and_is_no_call() -> None:
    closed = events.CallbackClosed(
        event_id=events.new_event_id(), task_id=4, number_e164="+41791234567", outcome="reached", desk="d1",
        missed_count=2, attempts=1, missed_at=events.format_time(NOW), seconds=60.0,
        occurred_at=events.format_time(NOW),
    )  # fmt: skip
    delivery = entry("started").delivery._replace(
        body=events.ENCODER.encode(closed), routing_key="callback.closed", type="callback.closed"
    )
    found = Entry(8, delivery, decode(delivery))
    assert found.event == closed
    assert as_row(found) == (
        "8", events.format_time(NOW), "callback.closed", "d1", "", "+41791234567", "task 4 reached"
    )  # fmt: skip
    assert Query(desk="d1").keeps(found)
    assert not Query(call="c1").keeps(found)


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("call.started.#", "call.started.inbound.d1", True),
        ("call.started.#", "call.started", True),  # '#' is zero words too
        ("call.*.inbound.d1", "call.ended.inbound.d1", True),
        ("call.*.inbound.d1", "call.ended.outbound.d1", False),
        ("call.*", "call.started.inbound", False),  # '*' is one word exactly
        ("#", "dial.confirmed.d1", True),
        ("#.d1", "call.started.inbound.d1", True),
        ("call.#.d1", "call.started.inbound.d2", False),
        ("dial.#", "call.started.inbound.d1", False),
    ],
)
def test_topic_patterns_as_the_broker_matches_them(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


@pytest.mark.parametrize(("age", "ok"), [("7D", True), ("12h", True), ("1Y", True), ("90m", True), ("7d", False),
                                         ("0D", False), ("7", False), ("7 D", False), ("", False)])  # fmt: skip
def test_history_max_age_is_rabbitmqs_unit(age: str, ok: bool) -> None:
    environ = {"TCX_BRIDGE_HISTORY_MAX_AGE": age}
    if ok:
        assert history_arguments(load_settings(environ=environ).settings)["x-max-age"] == age
    else:
        with pytest.raises(ConfigError, match=r"TCX_BRIDGE_HISTORY_MAX_AGE: .* is not a retention age"):
            load_settings(environ=environ)


def test_history_max_bytes_sets_a_size_limit() -> None:
    assert "x-max-length-bytes" not in history_arguments(load_settings(environ={}).settings)
    settings = load_settings(environ={"TCX_BRIDGE_HISTORY_MAX_BYTES": "5000000000"}).settings
    assert history_arguments(settings)["x-max-length-bytes"] == 5_000_000_000
    assert history_arguments(settings)["x-stream-max-segment-size-bytes"] == 50_000_000
    small = load_settings(environ={"TCX_BRIDGE_HISTORY_MAX_BYTES": "1000000"}).settings
    assert history_arguments(small)["x-stream-max-segment-size-bytes"] == 100_000  # a tenth: within 10%


def test_a_backfill_stopped_as_its_last_batch_begins_is_not_done(tmp_path: Path) -> None:
    """SIGTERM between the backfill's look at the stop and the runner's: the runner skips the batch, so
    the backfill has neither read it nor finished (else it would say done and go live without it)."""
    from consumers.analytics.consumer import Analytics
    from consumers.runtime.backfill import Backfill
    from consumers.runtime.runner import Runner

    settings = load_settings(environ={"TCX_BRIDGE_DATA_DIR": str(tmp_path)}, read_file=False).settings
    runner = Runner(Analytics(settings), settings)
    filling = Backfill(runner, "first", "first")
    filling.tail = 7  # the entry's offset: its batch is the last

    def stopped_meanwhile(routing_key: str) -> bool:
        runner.stop()  # the signal arrives while the batch is being sorted
        return True

    filling.wanted = stopped_meanwhile  # type: ignore[method-assign]
    last = entry("ended").delivery._replace(exchange=settings.exchange)
    try:
        filling._on_batch([last])
        assert not filling.done
        assert filling.read == 0
        assert filling._recorded(runner.consumer.database) is None  # no offset recorded either
    finally:
        runner.consumer.close()
