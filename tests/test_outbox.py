"""The durable outbox: order, atomic files, one replayer at a time, quarantine."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.errors import (
    BrokerRefusedError,
    BrokerRejectedError,
    BrokerUnreachableError,
    OutboxError,
    PublishNackedError,
)
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


def refusing(
    *refused: str, error: Exception | None = None
) -> tuple[list[str], Callable[[OutgoingMessage], None]]:
    """A one-at-a-time publisher that refuses the given ids for good (by default: ACCESS_REFUSED)."""
    published: list[str] = []

    def publish(m: OutgoingMessage) -> None:
        if m.message_id in refused:
            raise error or BrokerRefusedError(f"write access to topic {m.routing_key!r} refused")
        published.append(m.message_id)

    return published, publish


def test_an_event_refused_for_good_is_set_aside_and_the_rest_flow(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for n in range(4):
        outbox.put(message(n))
    published, publish = refusing("id-1")
    result = outbox.replay(publish)
    assert published == ["id-0", "id-2", "id-3"]
    assert (result.published, result.remaining, result.refused) == (3, 0, 1)
    [refused] = outbox.refused()
    assert refused.event_id == "id-1"
    assert refused.reason == "write access to topic 'call.started.inbound.d1' refused"
    assert outbox.load(refused.path) == message(1)  # the event itself, untouched


@pytest.mark.parametrize(
    "error",
    [
        BrokerRejectedError(
            "publish: the broker refused: 404 NOT_FOUND", 404
        ),  # no exchange, none declarable
        BrokerRejectedError("publish: the broker refused: 406 message too large", 406),
    ],
)
def test_other_permanent_refusals_are_set_aside(tmp_path: Path, error: Exception) -> None:
    outbox = Outbox(tmp_path)
    outbox.put(message(1))
    outbox.put(message(2))
    published, publish = refusing("id-1", error=error)
    assert outbox.replay(publish).refused == 1
    assert published == ["id-2"]


@pytest.mark.parametrize(
    "error",
    [
        PublishNackedError("nacked"),
        BrokerUnreachableError("no confirm within 30s"),
        BrokerRejectedError("publish: the broker refused: 541 INTERNAL_ERROR", 541),
    ],
)
def test_transient_failures_keep_everything_in_place(tmp_path: Path, error: Exception) -> None:
    outbox = Outbox(tmp_path)
    for n in range(3):
        outbox.put(message(n))
    _, publish = refusing("id-1", error=error)
    with pytest.raises(type(error)):
        outbox.replay(publish)
    assert [outbox.load(p).message_id for p in outbox.paths()] == ["id-1", "id-2"]
    assert outbox.refused() == []


def test_a_batch_refusal_is_pinned_on_the_right_event(tmp_path: Path) -> None:
    """A pipelined window stops at a refusal: the first unconfirmed event, alone, shows which it was."""
    outbox = Outbox(tmp_path)
    for n in range(6):
        outbox.put(message(n))
    published: list[str] = []
    calls: list[int] = []

    def publish_batch(messages: list[OutgoingMessage]) -> tuple[int, Exception | None]:
        calls.append(len(messages))
        for done, m in enumerate(messages):
            if m.message_id in ("id-2", "id-4"):
                # the confirm of the event before the refused one may be lost with the channel
                lost = 1 if done and len(messages) > 1 else 0
                return done - lost, BrokerRefusedError(f"refused {m.message_id}")
            published.append(m.message_id)
        return len(messages), None

    result = outbox.replay(publish_batch=publish_batch, window=10)
    assert (result.published, result.refused) == (4, 2)
    assert [r.event_id for r in outbox.refused()] == ["id-2", "id-4"]
    assert published[-1] == "id-5"
    assert sorted(set(published)) == ["id-0", "id-1", "id-3", "id-5"]  # id-1, id-3 possibly twice
    assert outbox.paths() == []


def test_retry_moves_refused_events_back_in_their_old_place(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for n in range(3):
        outbox.put(message(n))
    outbox.replay(refusing("id-0", "id-1")[1])
    outbox.put(message(3))
    [back] = outbox.retry(["id-1"])
    assert [r.event_id for r in outbox.refused()] == ["id-0"]
    assert [outbox.load(p).message_id for p in outbox.paths()] == ["id-1", "id-3"]
    assert back == outbox.paths()[0]
    assert not list(outbox.refused_dir.glob("*id-1*"))  # its reason went with it
    assert len(outbox.retry()) == 1
    assert [outbox.load(p).message_id for p in outbox.paths()] == ["id-0", "id-1", "id-3"]
    assert list(outbox.refused_dir.iterdir()) == []


def test_drop_deletes_one_refused_event_and_only_that(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.put(message(1))
    outbox.put(message(2))
    outbox.replay(refusing("id-1", "id-2")[1])
    [dropped] = outbox.drop(["id-2", "id-2"])
    assert dropped.event_id == "id-2"
    assert [r.event_id for r in outbox.refused()] == ["id-1"]
    assert sorted(p.name for p in outbox.refused_dir.iterdir()) == [
        outbox.refused()[0].path.name,
        outbox.refused()[0].path.name + ".reason",
    ]


@pytest.mark.parametrize(
    ("wanted", "error"),
    [
        ("nope", "no refused event 'nope' in"),
        ("id-", "'id-' names 2 refused events; give more of the event id"),  # a prefix of both
    ],
)
def test_an_unknown_or_ambiguous_id_is_one_line(tmp_path: Path, wanted: str, error: str) -> None:
    outbox = Outbox(tmp_path)
    outbox.put(message(1))
    outbox.put(message(2))
    outbox.replay(refusing("id-1", "id-2")[1])
    with pytest.raises(OutboxError, match=error):
        outbox.drop(["id-1", wanted])  # all or nothing
    assert len(outbox.refused()) == 2
    assert outbox.find_refused("id-1").event_id == "id-1"
    assert outbox.find_refused(outbox.refused()[1].path.name).event_id == "id-2"
