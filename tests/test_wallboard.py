"""The wallboard's snapshot (one story for tiles and desk cards), its settings, and its web guard."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings, load_settings
from bridge.errors import ConfigError
from bridge.events import CallEvent, format_time, new_event_id
from consumers.analytics.calls import apply_event
from consumers.numbers import display
from consumers.store.core import Store, open_sqlite
from consumers.wallboard.consumer import snapshot
from consumers.wallboard.routes import make_app
from consumers.wallboard.settings import WALLBOARD
from consumers.wallboard.web import Fanout, HostCheck, Throttle, WebServer, check_token
from tests.conftest import free_port, run_cli

NOW = datetime(2026, 11, 30, 14, 7, 30, tzinfo=UTC)
TOKEN = "a-board-token-of-24-chars"


def board_settings(tmp_path: Path, **values: str) -> Settings:
    environ = {"TCX_BRIDGE_DATA_DIR": str(tmp_path), "TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml")}
    environ |= {f"TCX_BRIDGE_{key.upper()}": value for key, value in values.items()}
    (tmp_path / "none.toml").write_text("")
    return load_settings(environ=environ).settings


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_sqlite(tmp_path / "wallboard.sqlite3", "wallboard")
    yield opened
    opened.close()


def call(store: Store, desk: str, call_id: str, *steps: tuple[str, float], caller: str = "0791234567",
         direction: str = "inbound") -> None:  # fmt: skip
    """Record a call's events: (kind, minutes before NOW)."""
    with store.transaction():
        for kind, minutes in steps:
            apply_event(store, CallEvent(
                event_id=new_event_id(), kind=kind, direction=direction, call_id=call_id,  # type: ignore[arg-type]
                caller_id=caller if kind == "started" else None, desk=desk, extension=None,
                occurred_at=format_time(NOW - timedelta(minutes=minutes)), argv=(),
            ))  # fmt: skip


def test_tiles_are_the_sums_of_the_desk_cards_and_lost_calls_leave_them(store: Store, tmp_path: Path) -> None:
    call(store, "a", "1", ("started", 2))  # ringing
    call(store, "a", "2", ("started", 3))  # ringing, waiting longer: the card shows this one
    call(store, "a", "3", ("started", 5), ("connected", 4))  # talking
    call(store, "b", "4", ("started", 50))  # no end for 50 min: lost, not ringing
    call(store, "b", "5", ("started", 45), ("connected", 44))  # no end for 44 min: lost, not talking
    call(store, "b", "6", ("started", 10), ("connected", 9), ("ended", 1))  # answered and ended
    call(store, "c", "7", ("started", 20), ("connected", 19))  # talking for 19 min: still live
    state = snapshot(store, board_settings(tmp_path, timezone="UTC"), now=NOW)
    cards = {desk["desk"]: desk for desk in state["desks"]}
    assert {d: (c["state"], c["ringing"], c["talking"], c["no_end_seen"]) for d, c in cards.items()} == {
        "a": ("ringing", 2, 1, 0),
        "b": ("idle", 0, 0, 2),
        "c": ("talking", 0, 1, 0),
    }
    assert cards["a"]["since"] == format_time(NOW - timedelta(minutes=3))
    tiles = state["tiles"]
    assert (tiles["ringing"], tiles["talking"], tiles["no_end_seen"]) == (2, 2, 2)
    assert tiles["longest_wait_since"] == format_time(NOW - timedelta(minutes=3))
    assert [row["outcome"] for row in state["recent"]] == [  # newest first
        "ringing", "ringing", "talking", "answered", "talking", "no end seen", "no end seen"
    ]  # fmt: skip
    # the first live call turns lost 30 min after its last event: the board refreshes then
    assert state["next_change"] == format_time(NOW - timedelta(minutes=20 - 1 - 30))


def test_lost_after_is_a_setting(store: Store, tmp_path: Path) -> None:
    call(store, "a", "1", ("started", 2))
    settings = board_settings(tmp_path, timezone="UTC", wallboard_lost_after="90s")
    state = snapshot(store, settings, now=NOW)
    assert state["tiles"]["ringing"] == 0
    assert state["desks"][0]["no_end_seen"] == 1
    assert state["recent"][0]["outcome"] == "no end seen"


def test_chart_slots_run_from_the_first_busy_hour_to_now_in_the_board_zone(
    store: Store, tmp_path: Path
) -> None:
    call(store, "a", "1", ("started", 60 * 5 + 3), ("ended", 60 * 5))  # 09:04:30 UTC = 10:04:30 in Zurich
    call(store, "a", "2", ("started", 1), ("ended", 0.5))  # 14:06:30 UTC
    call(store, "a", "3", ("started", 2), ("ended", 1))  # 14:05:30 UTC
    state = snapshot(store, board_settings(tmp_path, timezone="Europe/Zurich"), now=NOW)
    chart = state["chart"]
    assert state["timezone"] == "Europe/Zurich"
    assert chart[0] == {"at": "2026-11-30T09:00:00.000000Z", "calls": 1}  # 10:00 in Zurich
    assert chart[-1]["at"] == "2026-11-30T14:45:00.000000Z"  # the current hour's last slot, 15:45 in Zurich
    assert len(chart) == 6 * 4
    assert [slot["calls"] for slot in chart if slot["calls"]] == [1, 2]


def test_a_quiet_day_still_shows_the_last_hours(store: Store, tmp_path: Path) -> None:
    chart = snapshot(store, board_settings(tmp_path, timezone="UTC"), now=NOW)["chart"]
    assert (chart[0]["at"], chart[-1]["at"], sum(slot["calls"] for slot in chart)) == (
        "2026-11-30T09:00:00.000000Z",
        "2026-11-30T14:45:00.000000Z",
        0,
    )


@pytest.mark.parametrize(
    ("raw", "region", "shown"),
    [
        ("0791234567", "CH", "079 123 45 67"),
        ("+41791234567", "CH", "079 123 45 67"),
        ("0041 79 123 45 67", "CH", "079 123 45 67"),
        ("+41791234567", "DE", "+41 79 123 45 67"),  # another country's number: international
        ("+4930123456", "CH", "+49 30 123456"),
        ("123", "CH", "123"),  # an extension stays as given
        ("", "CH", None),  # anonymous
        ("not a number", "CH", "not a number"),
    ],
)
def test_caller_numbers_are_shown_one_way(raw: str, region: str, shown: str | None) -> None:
    assert display(raw, region) == shown


def test_recent_and_cards_show_numbers_in_the_regions_format(store: Store, tmp_path: Path) -> None:
    call(store, "a", "1", ("started", 1), caller="+41 79 123 45 67")
    call(store, "b", "2", ("started", 1), caller="0049 30 123456")
    state = snapshot(store, board_settings(tmp_path, timezone="UTC", region="CH"), now=NOW)
    assert [desk["caller"] for desk in state["desks"]] == ["079 123 45 67", "+49 30 123456"]
    masked = snapshot(store, board_settings(tmp_path, timezone="UTC"), now=NOW, masked=True)
    assert masked["desks"][0]["caller"] == "\u2022\u2022\u2022\u2022 4567"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30", 1800.0), ("90s", 90.0), ("2h", 7200.0), ("1.5m", 90.0), (" 45M ", 2700.0)],
)
def test_lost_after_reads_minutes_or_a_unit(tmp_path: Path, value: str, seconds: float) -> None:
    assert WALLBOARD.of(board_settings(tmp_path, wallboard_lost_after=value)).wallboard_lost_after == seconds


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        ("wallboard_lost_after", "soon", "TCX_BRIDGE_WALLBOARD_LOST_AFTER: 'soon' is not a duration; give minutes (30) or 90s, 30m, 2h"),
        ("wallboard_lost_after", "0.5s", "TCX_BRIDGE_WALLBOARD_LOST_AFTER: '0.5s' is too short; give at least 1s"),
        ("wallboard_locale", "de_CH.UTF-8", "TCX_BRIDGE_WALLBOARD_LOCALE: 'de_CH.UTF-8' is not a locale; use a language tag such as de-CH or en-US"),
        ("wallboard_hostnames", "board.example.com,evil .com", "TCX_BRIDGE_WALLBOARD_HOSTNAMES: 'evil .com' is not a host name; use e.g. wallboard.example.com"),
    ],
)  # fmt: skip
def test_bad_wallboard_settings_are_one_line(tmp_path: Path, key: str, value: str, line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        board_settings(tmp_path, **{key: value})
    assert str(caught.value) == line


def test_wallboard_settings_defaults(tmp_path: Path) -> None:
    settings = board_settings(tmp_path, wallboard_hostnames="Board.Example.com., 10.0.0.5")
    assert (WALLBOARD.of(settings).wallboard_lost_after, WALLBOARD.of(settings).wallboard_locale) == (
        1800.0,
        None,
    )
    assert WALLBOARD.of(settings).wallboard_hostnames == "board.example.com,10.0.0.5"


def test_a_short_token_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        check_token("fifteen-chars!!")
    assert str(caught.value) == (
        "wallboard_token: 15 characters is too short to resist guessing; give at least 16, "
        "e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
    )
    check_token("sixteen-chars!!!")
    check_token(None)


@pytest.mark.parametrize(
    ("bind", "names", "host", "ok"),
    [
        ("127.0.0.1", [], "127.0.0.1:8080", True),
        ("127.0.0.1", [], "localhost:8080", True),
        ("127.0.0.1", [], "LOCALHOST.", True),  # case and a trailing dot do not matter
        ("127.0.0.1", [], "[::1]:8080", True),  # another loopback address of this machine
        ("127.0.0.1", [], "evil.com", False),  # DNS rebinding: a name the attacker owns
        ("127.0.0.1", [], "evil.com:8080", False),
        ("127.0.0.1", [], "10.0.0.5", False),
        ("127.0.0.1", [], None, False),  # no Host at all
        ("::1", [], "[::1]:5781", True),
        ("::1", [], "localhost", True),
        ("10.0.0.5", [], "10.0.0.5:8080", True),
        ("10.0.0.5", [], "localhost", False),  # not bound to loopback
        ("10.0.0.5", ["board.example.com"], "board.example.com:8080", True),
        ("10.0.0.5", ["board.example.com"], "evil.com", False),
        ("0.0.0.0", [], "192.168.1.20:8080", True),  # a wildcard bind: any address of the machine
        ("0.0.0.0", [], "evil.com", False),
        ("::", [], "[fe80::1]:80", True),
        ("board.local", [], "board.local:8080", True),  # a bind by name accepts that name
    ],
)
def test_host_header_must_name_the_board(bind: str, names: list[str], host: str | None, ok: bool) -> None:
    assert HostCheck(bind, names)(host) is ok


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_closes_for_a_doubling_time_after_the_free_tries() -> None:
    clock = FakeClock()
    throttle = Throttle(clock)
    for _ in range(Throttle.FREE):
        assert throttle.wait("10.0.0.9") == 0
        throttle.failed("10.0.0.9")
    waits = []
    for _ in range(4):
        throttle.failed("10.0.0.9")
        waits.append(throttle.wait("10.0.0.9"))
        clock.now += waits[-1]
    assert waits == [1.0, 2.0, 4.0, 8.0]
    assert throttle.wait("10.0.0.10") == 0  # per client
    for _ in range(20):
        throttle.failed("10.0.0.9")
    assert throttle.wait("10.0.0.9") == Throttle.LONGEST
    throttle.succeeded("10.0.0.9")
    assert throttle.wait("10.0.0.9") == 0


def test_clients_are_addresses_and_ipv6_networks() -> None:
    assert Throttle.client("192.0.2.7") == "192.0.2.7"
    assert Throttle.client("::ffff:192.0.2.7") == "192.0.2.7"
    assert (
        Throttle.client("2001:db8:1:2:aaaa::1")
        == Throttle.client("2001:db8:1:2:bbbb::2")
        == "2001:db8:1:2::/64"
    )


@pytest.fixture
def web() -> Iterator[tuple[int, FakeClock]]:
    """A token-protected wallboard web server on 127.0.0.1 (no consumer), with a clock the test moves."""
    clock = FakeClock()
    fanout = Fanout()
    fanout.publish({"tiles": {"ringing": 0}})
    port = free_port()
    server = WebServer(make_app(fanout, TOKEN, hosts=HostCheck("127.0.0.1"), throttle=Throttle(clock)),
                       "127.0.0.1", port)  # fmt: skip
    server.start()
    yield port, clock
    server.stop()


def get(port: int, path: str, *, host: str | None = None, token: str | None = None) -> tuple[int, Any, str]:
    """status, headers and body of a GET with this Host (default: the bind address) and bearer token."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connection.putrequest("GET", path, skip_host=True)
    connection.putheader("Host", host or f"127.0.0.1:{port}")
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    answer = connection.getresponse()
    body = answer.read().decode()
    connection.close()
    return answer.status, answer.headers, body


def test_a_foreign_host_header_is_refused(web: tuple[int, Any]) -> None:
    port, _ = web
    status, headers, body = get(port, "/api/state", host="evil.com", token=TOKEN)
    assert status == 421
    assert body == "421: 'evil.com' is not this wallboard's host; add it to wallboard_hostnames " \
                   "(TCX_BRIDGE_WALLBOARD_HOSTNAMES) if it is yours\n"  # fmt: skip
    assert headers["X-Frame-Options"] == "DENY"
    assert get(port, "/api/state", host=f"evil.com:{port}", token=TOKEN)[0] == 421
    status, _, body = get(port, "/api/state", token=TOKEN)  # the bind address
    assert (status, json.loads(body)) == (200, {"tiles": {"ringing": 0}})
    assert get(port, "/api/state", host=f"localhost:{port}", token=TOKEN)[0] == 200


def test_repeated_wrong_tokens_are_slowed_down(web: tuple[int, FakeClock]) -> None:
    port, clock = web
    assert get(port, "/api/state")[0] == 401  # no token: not a guess
    for n in range(Throttle.FREE):
        assert get(port, "/api/state", token=f"guess-{n}")[:1] == (401,)
    status, headers, body = get(port, "/api/state", token="guess-5")
    assert (status, body) == (401, "401: wrong wallboard token\n")  # this one closes the door for 1 s
    status, headers, body = get(port, "/api/state", token=TOKEN)  # even the right token waits
    assert (status, headers["Retry-After"], body) == (
        429,
        "1",
        "429: too many wrong tokens from here; try again in 1s\n",
    )
    clock.now += 1
    assert get(port, "/api/state", token="guess-6")[0] == 401  # the next wrong one closes it for 2 s
    assert get(port, "/api/state", token=TOKEN)[1]["Retry-After"] == "2"
    clock.now += 2
    assert get(port, "/api/state", token=TOKEN)[0] == 200  # the right token opens it again
    assert get(port, "/api/state", token="guess-7")[0] == 401  # and the count starts over
    assert get(port, "/healthz")[0] == 200


def test_the_wallboard_refuses_a_short_token_at_start(env: dict[str, str]) -> None:
    short = {**env, "TCX_BRIDGE_WALLBOARD_TOKEN": "letmein"}
    refused = run_cli(short, "wallboard", "--host", "0.0.0.0", "--port", str(free_port()), timeout=30)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "Error: wallboard_token: 7 characters is too short to resist guessing; give at least 16, "
        "e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
    ]
    assert "letmein" not in refused.stderr


def test_the_snapshot_carries_the_thresholds_parsed_at_load(store: Store, tmp_path: Path) -> None:
    settings = board_settings(tmp_path, timezone="UTC", wallboard_thresholds="wait=10/20,missed=1/2.5")
    state = snapshot(store, settings, now=NOW)
    assert state["thresholds"] == {"wait": [10.0, 20.0], "missed": [1.0, 2.5]}
