"""The wallboard resumes: its day built from the history at start; SSE ids and Last-Event-ID replay."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bridge.config import Settings
from bridge.topology import declare_events, declare_history, publish_event
from bridge.transport import Broker
from consumers.store.core import sqlite_path
from consumers.wallboard.routes import make_app
from consumers.wallboard.web import Fanout, HostCheck, WebServer
from tests.conftest import Service, start_service, wait_until, wallboard_tiles
from tests.history import call_events, http_port


@pytest.fixture
def board() -> Iterator[tuple[Fanout, int]]:
    """A wallboard web server (no consumer) with three snapshots published."""
    fanout = Fanout()
    for n in range(1, 4):
        fanout.publish({"tiles": {"answered": n}})
    port = http_port()
    server = WebServer(make_app(fanout, None, hosts=HostCheck("127.0.0.1")), "127.0.0.1", port)
    server.start()
    yield fanout, port
    server.stop()


def frames(port: int, count: int, last_event_id: str | None = None) -> list[tuple[str, str]]:
    """The first count (id, data) events of /events, reconnecting with last_event_id."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    connection.request("GET", "/events", headers=headers)
    answer = connection.getresponse()
    found: list[tuple[str, str]] = []
    event_id = ""
    while len(found) < count:
        line = answer.fp.readline().decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            found.append((event_id, line[6:]))
    connection.close()
    return found


def test_a_browser_reconnecting_with_last_event_id_gets_what_it_missed(board: tuple[Fanout, int]) -> None:
    fanout, port = board
    first = frames(port, 1)
    assert first == [(f"{fanout.boot}-3", '{"tiles":{"answered":3}}')]  # a new browser: the board now
    missed = frames(port, 2, last_event_id=f"{fanout.boot}-1")
    assert missed == [
        (f"{fanout.boot}-2", '{"tiles":{"answered":2}}'),
        (f"{fanout.boot}-3", '{"tiles":{"answered":3}}'),
    ]


@pytest.mark.parametrize(
    "last_event_id",
    [
        "0-2",  # another process's id: the wallboard restarted
        "junk",
        "",
    ],
)
def test_an_unknown_last_event_id_gets_the_board_now(board: tuple[Fanout, int], last_event_id: str) -> None:
    fanout, port = board
    assert frames(port, 1, last_event_id=last_event_id) == [(f"{fanout.boot}-3", '{"tiles":{"answered":3}}')]


def test_too_old_an_id_gets_the_board_now() -> None:
    fanout = Fanout()
    for n in range(Fanout.REPLAY + 5):
        fanout.publish({"n": n})
    assert fanout._missed(f"{fanout.boot}-1") == [fanout._recent[-1][1]]
    assert len(fanout._missed(f"{fanout.boot}-{fanout.sequence - 3}")) == 3


@pytest.mark.integration
def test_the_wallboard_restarted_mid_day_shows_the_same_tiles_from_the_history(
    env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    declare_events(broker, settings)
    declare_history(broker, settings)
    board_env = {**env, "TCX_BRIDGE_TIMEZONE": "UTC"}
    now = datetime.now(UTC)
    base = max(now - timedelta(minutes=2), now.replace(hour=0, minute=0, second=0, microsecond=0))  # today
    for number in range(12):  # before the wallboard ever ran: only the history has them
        for message in call_events(settings, number, base=base, every=5):
            publish_event(broker, settings, message)
    port = http_port()
    first = start_service(
        services, board_env, broker, settings.queue("wallboard"), "wallboard", "--port", str(port)
    )
    wait_until(lambda: wallboard_tiles(port)["answered"] == 12, timeout=20)
    before = wallboard_tiles(port)
    first.stop()
    sqlite_path(settings, "wallboard").unlink()  # its own store lost: the history has the day
    second = start_service(
        services, board_env, broker, settings.queue("wallboard"), "wallboard", "--port", str(port)
    )
    wait_until(lambda: wallboard_tiles(port)["answered"] == 12, timeout=20)
    assert wallboard_tiles(port) == before
    wait_until(lambda: "backfill done" in second.output())


@pytest.mark.parametrize("number", ["²", "9" * 5000])  # a digit int() does not read; past int()'s limit
def test_a_forged_last_event_id_neither_fails_the_stream_nor_leaks_it(
    board: tuple[Fanout, int], number: str
) -> None:
    """A browser (any holder of the read-only token) sent an id of this board's boot with a number int()
    refuses: a 500, and the stream stayed in the fan-out for good, fed every snapshot (one leak a request)."""
    fanout, port = board
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/events", headers={"Last-Event-ID": f"{fanout.boot}-{number}"})
    answer = connection.getresponse()
    assert answer.status == 200
    lines: list[bytes] = []
    while len(lines) < 12 and not (lines and lines[-1].startswith(b"data:")):  # chunk sizes between lines
        lines.append(answer.fp.readline().rstrip())
    connection.close()
    assert [line for line in lines if line.startswith((b"id:", b"data:"))] == [
        f"id: {fanout.boot}-3".encode(),
        b'data: {"tiles":{"answered":3}}',
    ]  # the board now
    wait_until(lambda: not fanout._streams, timeout=5)  # the closed stream left the fan-out
