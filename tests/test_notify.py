"""The event of one launch, without a broker: escaped bytes, the body within the wire limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import events, notify
from bridge.config import Settings, load_settings
from bridge.notify import build_event, to_message, too_big


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"desk": "d1"}, {"TCX_BRIDGE_DATA_DIR": str(tmp_path)}, read_file=False).settings


@pytest.mark.parametrize(
    ("item", "stored"),
    [
        ("/C:\udcff", "/C:\\xff"),  # a byte that is not UTF-8, as Python reads it from argv on POSIX
        ("/C:07\udc80\udcc3", "/C:07\\x80\\xc3"),
        ("/C:\ud800", "/C:\\ud800"),  # an unpaired UTF-16 half, as Windows may pass it
    ],
)
def test_bytes_that_are_not_utf8_are_kept_escaped(settings: Settings, item: str, stored: str) -> None:
    event, problems = build_event(["/N:S", item, "/T:I", "/I:1"], settings)
    assert event.kind == "started"
    assert event.caller_id == stored[3:]
    assert event.argv == ("/N:S", stored, "/T:I", "/I:1")
    assert problems == [f"argument 2 {stored!r} holds bytes that are not UTF-8; kept escaped"]
    to_message(event)  # encodes: no UnicodeEncodeError


def test_a_nul_in_a_caller_id_makes_an_invalid_launch_shown_visibly(settings: Settings) -> None:
    event, problems = build_event(["/N:S", "/C:079\x00123", "/T:I", "/I:1"], settings)
    assert event.kind == "invalid"
    assert event.caller_id == "079\x00123"  # the audit trail keeps it; JSON escapes it
    assert b'"caller_id":"079\\u0000123"' in to_message(event).body
    assert problems[0].startswith("caller id /C: '079\\x00123' holds control characters")


def test_stray_arguments_stay_while_the_event_fits(settings: Settings) -> None:
    argv = ["/N:S", "/C:1", "/T:I", "/I:1", "stray", "/X:unknown", "/C:2"]
    event, problems = build_event(argv, settings)
    assert event.argv == tuple(argv)
    assert event.caller_id == "2"  # the last one wins
    assert problems == []


def test_stray_arguments_are_dropped_to_fit_the_wire_limit(settings: Settings) -> None:
    """Only what the parser reads is kept: the last of each /N: /C: /T: /I:, in their order."""
    argv = ["/C:old", "/N:S", "x" * 70_000, "/T:I", "/I:1", "/C:new", "/Q:" + "y" * 10]
    event, problems = build_event(argv, settings)
    assert event.argv == ("/N:S", "/T:I", "/I:1", "/C:new")
    assert event.caller_id == "new"
    assert len(problems) == 1
    assert problems[0].startswith("dropped 3 stray argument(s) of 70019 characters")
    assert too_big(to_message(event)) is None


def test_a_body_within_the_limit_only_by_json_escapes_is_measured_in_bytes(settings: Settings) -> None:
    """12,000 NULs are 12,000 characters but 72,000 bytes of JSON: over the limit, so dropped."""
    event, problems = build_event(["/N:E", "/T:O", "/I:1", "\x00" * 12_000], settings)
    assert event.argv == ("/N:E", "/T:O", "/I:1")
    assert len(to_message(event).body) <= events.MAX_BODY
    assert problems[0].startswith("dropped 1 stray argument(s) of 12000 characters")


def test_an_invalid_launch_too_big_to_keep_is_said_so(settings: Settings) -> None:
    event, _ = build_event(["/N:S", "/I:" + "9" * 40_000], settings)
    assert event.kind == "invalid"
    message = to_message(event)
    assert too_big(message) == (
        f"the event has {len(message.body)} bytes, over the 65536 a consumer takes, even without stray arguments"
    )


def test_the_files_a_launch_does_not_take_for_events_are_the_outboxs_own() -> None:
    from bridge.outbox.files import LOCK, SENT

    assert {LOCK, SENT} == notify.NOT_EVENTS


def test_an_outbox_with_only_its_lock_and_sent_journal_holds_no_event(tmp_path: Path) -> None:
    settings = load_settings(environ={"TCX_BRIDGE_DATA_DIR": str(tmp_path)}, read_file=False).settings
    outbox = notify.LazyOutbox(settings)
    tmp_path = settings.outbox_dir
    tmp_path.mkdir(parents=True)
    assert not outbox.may_hold_events()
    (tmp_path / ".lock").touch()
    (tmp_path / ".sent").write_text("\\n")
    (tmp_path / "refused").mkdir()
    assert not outbox.may_hold_events()
    (tmp_path / ".tmp-0123").write_bytes(b"{")  # an orphan a killed launch left: replay recovers it
    assert outbox.may_hold_events()
