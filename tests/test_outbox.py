"""The durable outbox: order, atomic files, one replayer at a time, quarantine."""

from __future__ import annotations

import os
import stat
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
from bridge.outbox import BatchPublisher, Outbox
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


def names(outbox: Outbox) -> list[str]:
    return [outbox.load(p).message_id for p in outbox.paths()]


def accepting(published: list[str], during: Callable[[], None] = lambda: None) -> BatchPublisher:
    """A broker that confirms every window, running during() while it publishes."""

    def publish_batch(messages: list[OutgoingMessage]) -> tuple[int, Exception | None]:
        during()
        published.extend(m.message_id for m in messages)
        return len(messages), None

    return publish_batch


def event_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".json"))


@pytest.mark.parametrize("count", [12, 300])  # 300: removed by several threads at once
def test_a_pipelined_replay_records_windows_as_sent_and_removes_them_after(
    tmp_path: Path, count: int
) -> None:
    outbox = Outbox(tmp_path)
    for n in range(count):
        outbox.put(message(n))
    published: list[str] = []
    result = outbox.replay(publish_batch=accepting(published), window=50)
    assert (result.published, result.remaining) == (count, 0)
    assert published == [f"id-{n}" for n in range(count)]
    assert outbox.paths() == []  # done even where the thread has not removed them yet
    outbox.join_cleanup()
    assert event_files(tmp_path) == []
    assert not outbox.has_sent()  # the thread emptied .sent once its files were gone


def test_one_at_a_time_removes_each_file_at_once_without_a_journal(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for n in range(5):
        outbox.put(message(n))
    seen: list[list[str]] = []
    outbox.replay(lambda m: seen.append(event_files(tmp_path)))
    assert [len(files) for files in seen] == [5, 4, 3, 2, 1]  # the one before gone when the next goes
    assert event_files(tmp_path) == []
    assert not (tmp_path / ".sent").exists()


def test_files_named_in_sent_are_not_pending(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    paths = [outbox.put(message(n)) for n in range(6)]
    outbox.record_sent([p.name for p in paths[:4]])
    assert names(outbox) == ["id-4", "id-5"]
    assert len(event_files(tmp_path)) == 6  # still on disk, but done


def test_a_crash_between_the_journal_and_the_removals_publishes_none_again(tmp_path: Path) -> None:
    """Files left on disk and named in .sent (the process died first): the next replay removes them unpublished."""
    outbox = Outbox(tmp_path)
    paths = [outbox.put(message(n)) for n in range(8)]
    outbox.record_sent([p.name for p in paths[:5]])
    published: list[str] = []
    result = Outbox(tmp_path).replay(publish_batch=accepting(published, during=lambda: None), window=500)
    assert published == ["id-5", "id-6", "id-7"]
    assert (result.published, result.remaining) == (3, 0)
    assert not any(p.exists() for p in paths[:5])  # removed before the replay published anything
    Outbox(tmp_path).join_cleanup()
    assert event_files(tmp_path) == []


def test_the_sent_files_are_removed_before_anything_is_published(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    paths = [outbox.put(message(n)) for n in range(4)]
    outbox.record_sent([p.name for p in paths[:3]])
    at_publish: list[list[str]] = []
    outbox.replay(publish_batch=accepting([], during=lambda: at_publish.append(event_files(tmp_path))))
    assert at_publish == [[paths[3].name]]
    assert (tmp_path / ".sent").read_bytes() == b""  # emptied only after the removals


def test_a_torn_last_line_of_sent_costs_that_one_event_only(tmp_path: Path) -> None:
    """A crash mid-append: the complete names stand, the torn one is replayed again (same event id)."""
    outbox = Outbox(tmp_path)
    paths = [outbox.put(message(n)) for n in range(6)]
    torn = paths[2].name[: len(paths[2].name) // 2]
    (tmp_path / ".sent").write_bytes(f"\n{paths[0].name}\n{paths[1].name}\n{torn}".encode())
    assert names(outbox) == ["id-2", "id-3", "id-4", "id-5"]
    # An append after the torn line (none does, as replay empties .sent first; but if one did):
    outbox.record_sent([paths[3].name, paths[4].name])
    assert names(outbox) == ["id-2", "id-5"]  # its newline first: the torn line swallows no name
    published: list[str] = []
    outbox.replay(publish_batch=accepting(published))
    assert published == ["id-2", "id-5"]
    outbox.join_cleanup()
    assert event_files(tmp_path) == []


@pytest.mark.parametrize(
    "line",
    [
        b"\x00\x00\x00\x00",  # a crash may leave zeros where the append was
        b"../outside.json",  # not a name in the outbox: never removed
        b".lock",
        b"",
    ],
)
def test_a_line_of_sent_that_names_no_event_file_is_ignored(tmp_path: Path, line: bytes) -> None:
    outbox = Outbox(tmp_path / "outbox")
    outside = tmp_path / "outside.json"
    outside.write_bytes(b"{}")
    kept = outbox.put(message(1))
    (tmp_path / "outbox" / ".sent").write_bytes(b"\n" + line + b"\n")
    assert names(outbox) == ["id-1"]
    published: list[str] = []
    outbox.replay(lambda m: published.append(m.message_id))
    assert published == ["id-1"]
    assert outside.exists()
    assert not kept.exists()


def test_new_files_written_during_a_replay_are_never_marked_sent(tmp_path: Path) -> None:
    """Launches outboxing events while a replay runs: theirs wait for the next replay, published once."""
    outbox = Outbox(tmp_path)
    for n in range(10):
        outbox.put(message(n))
    launched = iter(range(100, 200))
    published: list[str] = []
    during = lambda: [Outbox(tmp_path).put(message(next(launched))) for _ in range(3)]  # noqa: E731
    result = outbox.replay(publish_batch=accepting(published, during), window=4)
    assert published == [f"id-{n}" for n in range(10)]
    assert result.remaining == 9  # three windows, three launches each
    new = [f"id-{n}" for n in range(100, 109)]
    assert names(outbox) == new
    outbox.join_cleanup()
    assert names(outbox) == new  # still there after the removals
    again: list[str] = []
    outbox.replay(publish_batch=accepting(again))
    assert again == new
    outbox.join_cleanup()
    assert event_files(tmp_path) == []


def in_the_way(tmp_path: Path, count: int = 6) -> tuple[Outbox, Path]:
    """A replay whose sent file cannot be removed: a directory took its name (even root cannot unlink it)."""
    outbox = Outbox(tmp_path)
    paths = [outbox.put(message(n)) for n in range(count)]
    blocked = paths[count * 2 // 3]

    def block() -> None:
        if blocked.is_file():
            blocked.unlink()
            blocked.mkdir()
            (blocked / "x").write_bytes(b"")

    result = outbox.replay(publish_batch=accepting([], during=block))
    assert (result.published, result.remaining) == (count, 0)
    return outbox, blocked


@pytest.mark.parametrize("count", [6, 300])  # 300: the failure is on a helper thread's share
def test_a_removal_failure_shows_at_join(tmp_path: Path, count: int) -> None:
    outbox, blocked = in_the_way(tmp_path, count)
    with pytest.raises(OutboxError, match=f"cannot remove '{blocked}' after its confirm"):
        outbox.join_cleanup()
    assert event_files(tmp_path) == [blocked.name]  # the others removed all the same
    assert outbox.paths() == []  # named in .sent: never published again
    assert outbox.has_sent()


def test_a_removal_failure_shows_at_the_next_replay_and_jams_nothing(tmp_path: Path) -> None:
    outbox, blocked = in_the_way(tmp_path)
    outbox.put(message(9))
    with pytest.raises(OutboxError, match=f"cannot remove '{blocked}' after its confirm"):
        outbox.replay(publish_batch=accepting([]))
    published: list[str] = []
    outbox.replay(publish_batch=accepting(published))  # the next one goes on
    assert published == ["id-9"]
    assert outbox.paths() == []  # the one in the way is still named in .sent: never published again
    assert blocked.name in (tmp_path / ".sent").read_text()
    (blocked / "x").unlink()
    blocked.rmdir()
    outbox.put(message(10))
    outbox.replay(publish_batch=accepting(published))
    assert published == ["id-9", "id-10"]
    assert not outbox.has_sent()


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_an_outboxed_event_is_the_users_alone(tmp_path: Path) -> None:
    """An event holds the caller's number: its file is 0600, a new outbox directory 0700."""
    outbox = Outbox(tmp_path / "outbox")
    path = outbox.put(message(1))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "outbox").stat().st_mode) == 0o700
