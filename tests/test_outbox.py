"""The durable outbox: order, atomic files, one replayer at a time, quarantine."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bridge.errors import PublishNackedError
from bridge.outbox import Outbox
from bridge.transport import OutgoingMessage


def message(n: int) -> OutgoingMessage:
    return OutgoingMessage(
        routing_key=f"call.started.inbound.d{n}",
        body=b'{"n":%d}' % n,
        message_id=f"id-{n}",
        type="call.started",
        timestamp=1700000000 + n,
    )


def test_put_then_load_roundtrips(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    path = outbox.put(message(1))
    assert outbox.load(path) == message(1)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_replay_is_oldest_first_and_deletes_after_publish(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for n in range(5):
        outbox.put(message(n))
    published: list[str] = []
    result = outbox.replay(lambda m: published.append(m.message_id))
    assert published == [f"id-{n}" for n in range(5)]
    assert result.published == 5
    assert outbox.paths() == []


def test_replay_limit_leaves_the_rest(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for n in range(5):
        outbox.put(message(n))
    result = outbox.replay(lambda m: None, limit=2)
    assert (result.published, result.remaining) == (2, 3)


def test_failed_publish_keeps_the_event_and_the_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for n in range(3):
        outbox.put(message(n))

    def publish(m: OutgoingMessage) -> None:
        if m.message_id == "id-1":
            raise PublishNackedError("nacked")

    with pytest.raises(PublishNackedError):
        outbox.replay(publish)
    assert [outbox.load(p).message_id for p in outbox.paths()] == ["id-1", "id-2"]


def test_a_second_replayer_is_locked_out(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.put(message(1))
    inside, release = threading.Event(), threading.Event()
    results = []

    def slow(m: OutgoingMessage) -> None:
        inside.set()
        release.wait(5)

    worker = threading.Thread(target=lambda: results.append(outbox.replay(slow)))
    worker.start()
    assert inside.wait(5)
    second = Outbox(tmp_path).replay(lambda m: pytest.fail("published twice"), wait=0.2)
    release.set()
    worker.join(5)
    assert second.locked_out
    assert results[0].published == 1


def test_unreadable_file_is_quarantined_not_blocking(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.put(message(2))
    (tmp_path / "00000000000000000001-broken.json").write_text("{not json")
    published: list[str] = []
    result = outbox.replay(lambda m: published.append(m.message_id))
    assert published == ["id-2"]
    assert result.published == 1
    assert (tmp_path / "corrupt" / "00000000000000000001-broken.json").exists()
