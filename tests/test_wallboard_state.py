"""The wallboard kept record by record is the wallboard read from the store, on SQLite and PostgreSQL.

A simulated day (answered, missed, open, lost, dialed calls, calls across
midnight, events missing, outbound numbers reused) is delivered shuffled and
with duplicates, in batches as the runtime makes them; the board the consumer
keeps must equal, at every step, the board recomputed from the store, and its
figures must be those of ``tcx-bridge report`` and the calls_daily view.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.config import Settings, load_settings
from bridge.events import ENCODER, CallEvent, format_time, new_event_id
from bridge.transport import Delivery
from consumers.analytics.report import Selection, daily_report
from consumers.runtime.runner import Context
from consumers.store.core import savepoint, transaction
from consumers.wallboard.consumer import Wallboard, snapshot

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 16:00 in Zurich


def day_events(zone: str, seed: int = 7, calls: int = 240) -> list[CallEvent]:
    """The events of a day up to NOW, in order; some calls began before the local midnight."""
    rng = random.Random(seed)
    midnight = datetime(2026, 11, 30, tzinfo=ZoneInfo(zone)).astimezone(UTC)
    length = (NOW - midnight).total_seconds()
    found = []
    for n in range(calls):
        direction = "outbound" if n % 5 == 0 else "inbound"
        call_id = f"07955500{n % 3}" if direction == "outbound" else f"c{n}"  # dialed numbers come back
        fate = rng.choice(["answered", "answered", "answered", "missed", "open", "no start", "no end"])
        begin = midnight + timedelta(seconds=rng.uniform(-1800, length - 60))
        if fate == "open":  # ringing or talking now, or lost (no end for 30 minutes)
            begin = NOW - timedelta(seconds=rng.uniform(5, 2400))
        ring = rng.choice([4.0, 19.5, 20.0, 25.0, 25.000001, rng.uniform(1, 60)])  # some at the service level
        moments = {"started": begin, "connected": begin + timedelta(seconds=ring)}
        moments["ended"] = moments["connected"] + timedelta(seconds=rng.uniform(5, 900))
        if fate == "missed":
            del moments["connected"]
        if fate == "no start":
            del moments["started"]
        if fate in ("open", "no end"):
            del moments["ended"]
            if rng.random() < 0.4:
                del moments["connected"]
        for kind, moment in moments.items():
            if moment < NOW:
                found.append(CallEvent(
                    event_id=new_event_id(), kind=kind, direction=direction, call_id=call_id,  # type: ignore[arg-type]
                    caller_id=f"0791234{n % 40:03d}" if kind == "started" else None, desk=f"d{n % 7}",
                    extension=None, occurred_at=format_time(moment), argv=(),
                ))  # fmt: skip
    return found


def delivered(events: list[CallEvent], seed: int = 11) -> list[list[CallEvent]]:
    """The events shuffled, a quarter of them twice, in batches of 1 to 12."""
    rng = random.Random(seed)
    shuffled = events + rng.sample(events, len(events) // 4)
    rng.shuffle(shuffled)
    batches = []
    while shuffled:
        size = rng.randint(1, 12)
        batches.append(shuffled[:size])
        shuffled = shuffled[size:]
    return batches


def handle(board: Wallboard, batch: list[CallEvent], *, fail: bool = False) -> None:
    """One batch as the runtime handles it: one transaction, prepare, a savepoint per message."""
    deliveries = [
        Delivery(ENCODER.encode(event), event.routing_key, "x", tag, False, event.event_id, f"call.{event.kind}",
                 {}, user_id="guest")
        for tag, event in enumerate(batch, 1)
    ]  # fmt: skip
    store = board.store
    with transaction(store):
        board.prepare(deliveries)
        for delivery in deliveries:
            with savepoint(store):
                context = Context(board.settings, delivery, delivery.routing_key, lambda *_: True)
                board.handle(board.decode(delivery.body, delivery.routing_key), context)
        if fail:
            raise RuntimeError("the commit failed")


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    (tmp_path / "none.toml").write_text("")
    environ = {"TCX_BRIDGE_DATA_DIR": str(tmp_path), "TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml"),
               "TCX_BRIDGE_TIMEZONE": "Europe/Zurich", "TCX_BRIDGE_SERVICE_LEVEL_SECONDS": "25"}  # fmt: skip
    if request.param == "postgresql":
        environ["TCX_BRIDGE_STORE_URL"] = request.getfixturevalue("pg_url")
    return load_settings(environ=environ).settings


@pytest.fixture
def board(settings: Settings) -> Iterator[Wallboard]:
    opened = Wallboard(settings)
    yield opened
    opened.close()


def from_store(board: Wallboard, now: datetime = NOW) -> dict[str, object]:
    return snapshot(board.store, board.settings, now=now, contact_name=board.contact_name)


def test_the_board_kept_record_by_record_is_the_board_read_from_the_store(board: Wallboard) -> None:
    board.refresh(NOW)  # the day read once, empty
    kept = board.board
    batches = delivered(day_events("Europe/Zurich"))
    for n, batch in enumerate(batches):
        handle(board, batch)
        board.refresh(NOW)
        if n % 10 == 0:
            assert board.current == from_store(board), f"after batch {n}"
    assert board.board is kept  # never read again
    assert board.current == from_store(board)
    tiles = board.current["tiles"]
    assert tiles["answered"] > 0
    assert tiles["missed"] > 0
    assert tiles["no_end_seen"] > 0
    assert tiles["ringing"] + tiles["talking"] > 0
    assert 0 < tiles["service_level"] < 1
    assert {desk["desk"] for desk in board.current["desks"]} == {f"d{n}" for n in range(7)}


def test_a_batch_rolled_back_is_read_again_from_the_store(board: Wallboard) -> None:
    batches = delivered(day_events("Europe/Zurich", seed=3, calls=60), seed=5)
    board.refresh(NOW)
    half = len(batches) // 2
    for batch in batches[:half]:
        handle(board, batch)
        board.refresh(NOW)
    with pytest.raises(RuntimeError):
        handle(board, batches[half], fail=True)  # merged and shown to the board, never committed
    handle(board, batches[half])  # the failed batch comes again: committed, but no tick came after it
    for batch in batches[half + 1 :]:
        handle(board, batch)
        board.refresh(NOW)
    assert board.current == from_store(board)


def event(kind: str, desk: str, call_id: str, at: str) -> CallEvent:
    return CallEvent(
        event_id=new_event_id(), kind=kind, direction="inbound", call_id=call_id,  # type: ignore[arg-type]
        caller_id="0791234567" if kind == "started" else None, desk=desk, extension=None, occurred_at=at, argv=(),
    )  # fmt: skip


def test_a_call_found_to_begin_yesterday_leaves_the_day(board: Wallboard) -> None:
    """Its end came first (00:05 in Zurich), then its start (23:58 the day before): the record moves out."""
    board.refresh(NOW)
    handle(board, [event("started", "late", "a", "2026-11-29T23:02:00.000000Z"),
                   event("ended", "late", "a", "2026-11-29T23:03:00.000000Z")])  # fmt: skip
    handle(board, [event("connected", "late", "b", "2026-11-29T23:04:00.000000Z"),
                   event("ended", "late", "b", "2026-11-29T23:05:00.000000Z")])  # fmt: skip
    board.refresh(NOW)
    assert board.current["desks"][0]["last"] == "2026-11-29T23:05:00.000000Z"
    handle(board, [event("started", "late", "b", "2026-11-29T22:58:00.000000Z")])
    board.refresh(NOW)
    assert board.current == from_store(board)
    assert board.current["desks"][0]["last"] == "2026-11-29T23:03:00.000000Z"
    assert len(board.current["recent"]) == 1


def test_the_day_turns_with_the_store_read_again(board: Wallboard) -> None:
    for batch in delivered(day_events("Europe/Zurich", seed=9, calls=40)):
        handle(board, batch)
    board.refresh(NOW)
    first = board.current
    tomorrow = NOW + timedelta(days=1)
    board.refresh(tomorrow)
    assert (first["day"], board.current["day"]) == ("2026-11-30", "2026-12-01")
    assert board.current == from_store(board, tomorrow)
    assert board.current["tiles"]["answered"] == 0
    assert board.current["recent"] == []


def test_the_tiles_are_the_report_and_the_calls_daily_view_of_the_day(tmp_path: Path) -> None:
    (tmp_path / "none.toml").write_text("")
    settings = load_settings(environ={
        "TCX_BRIDGE_DATA_DIR": str(tmp_path), "TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml"),
        "TCX_BRIDGE_TIMEZONE": "UTC", "TCX_BRIDGE_SERVICE_LEVEL_SECONDS": "25",
    }).settings  # fmt: skip
    board = Wallboard(settings)
    board.refresh(NOW)
    for batch in delivered(day_events("UTC", seed=21)):
        handle(board, batch)
        board.refresh(NOW)
    tiles = board.current["tiles"]
    (report,) = daily_report(
        board.store, Selection(since="2026-11-30T00:00:00Z", until="2026-12-01T00:00:00Z")
    )["by_day"]
    assert {name: tiles[name] for name in ("answered", "missed", "answer_rate", "ring_avg", "talk_avg")} == {
        name: report[name] for name in ("answered", "missed", "answer_rate", "ring_avg", "talk_avg")
    }
    rows = board.store.execute("SELECT * FROM calls_daily WHERE day = '2026-11-30'").fetchall()
    within, rings = (
        sum(row[name] for row in rows) for name in ("inbound_within_service_level", "ring_count")
    )
    assert tiles["service_level"] == round(within / rings, 4)
    assert (
        board.store.execute("SELECT seconds FROM service_level").fetchone()["seconds"] == 25
    )  # written at start
    board.close()
