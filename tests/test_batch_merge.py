"""A batch of call events merged at once on SQLite gives the records that one event at a time gives."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge import events
from consumers.analytics.calls import apply_event, merge_batch
from consumers.store.core import SqliteStore, open_sqlite


def call_events(count: int) -> list[events.CallEvent]:
    start = datetime(2026, 12, 1, 9, tzinfo=UTC)
    found = []
    for n in range(count):
        call, step = divmod(n, 3)
        found.append(
            events.CallEvent(
                event_id=events.new_event_id(),
                kind=("started", "connected", "ended")[step],
                direction="outbound" if call % 4 == 0 else "inbound",
                call_id=f"c{call % 7}",  # keys reused: later calls join or open records by time
                caller_id="0791234567" if step == 0 else None,
                desk=f"desk{call % 3}",
                extension=None,
                occurred_at=events.format_time(start + timedelta(minutes=call * 3, seconds=step * 20)),
                argv=(),
            )
        )
    return found


def records(store: SqliteStore) -> list[tuple[object, ...]]:
    columns = (
        "desk, direction, call_id, caller_id, started_at, connected_at, ended_at, ring_seconds, talk_seconds"
    )
    rows = store.execute(f"SELECT {columns} FROM calls ORDER BY desk, direction, call_id, started_at")
    return [tuple(row) for row in rows]


def test_batches_with_duplicates_out_of_order_give_the_one_by_one_records(tmp_path: Path) -> None:
    randomness = random.Random(26)
    sent = call_events(300)
    sent += randomness.sample(sent, 40)  # redelivered copies: the same event ids
    randomness.shuffle(sent)
    one_by_one = open_sqlite(tmp_path / "one.sqlite3", "analytics")
    batched = open_sqlite(tmp_path / "batched.sqlite3", "analytics")
    duplicates = 0
    with one_by_one.transaction():
        for event in sent:
            if one_by_one.first_time(event.event_id):
                apply_event(one_by_one, event)
    for first in range(0, len(sent), 37):
        with batched.transaction():
            batch = list(enumerate(sent[first : first + 37]))
            outcome = merge_batch(batched, batch)
        assert set(outcome) == {tag for tag, _ in batch}
        duplicates += sum(record is None for record in outcome.values())
    assert duplicates == 40
    assert records(batched) == records(one_by_one)
    assert len(records(batched)) >= 100


def test_first_times_records_each_id_once(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path / "ids.sqlite3", "analytics")
    with store.transaction():
        assert store.first_times(["a", "b", "a"]) == {"a", "b"}
        assert store.first_times(["b", "c"]) == {"c"}
    assert store.execute("SELECT count(*) FROM processed").fetchone()[0] == 3


def test_first_times_over_many_ids_in_one_batch(tmp_path: Path) -> None:
    """More ids than one IN (...) list holds: each is judged, the known ones anywhere in the batch."""
    store = open_sqlite(tmp_path / "ids.sqlite3", "analytics")
    ids = [f"id-{n}" for n in range(1300)]
    with store.transaction():
        assert store.first_times(ids[::3]) == set(ids[::3])
    with store.transaction():
        assert store.first_times(ids + ids[:50]) == set(ids) - set(ids[::3])
    assert store.execute("SELECT count(*) FROM processed").fetchone()[0] == 1300


def test_insert_ids_go_on_after_the_highest_id_as_sqlite_would(tmp_path: Path) -> None:
    """The ids insert_ids gives are the ones SQLite itself gives an INTEGER PRIMARY KEY, rows in order."""
    store = open_sqlite(tmp_path / "calls.sqlite3", "analytics")
    columns = ("desk", "direction", "call_id", "answered")
    with store.transaction():
        assert store.insert_ids("calls", columns, []) == []
        assert store.insert_ids("calls", columns, [("d", "inbound", "a", 0), ("d", "inbound", "b", 1)]) == [
            1,
            2,
        ]
        own = store.execute(
            "INSERT INTO calls (desk, direction, call_id, answered) VALUES ('d', 'inbound', 'c', 0) RETURNING id"
        ).fetchone()["id"]
        assert own == 3
        store.execute("DELETE FROM calls WHERE id = 1")
        assert store.insert_ids("calls", columns, [("e", "outbound", "x", 1)]) == [4]
    rows = store.execute("SELECT id, call_id FROM calls ORDER BY id").fetchall()
    assert [tuple(row) for row in rows] == [(2, "b"), (3, "c"), (4, "x")]
