"""The wallboard in a real browser: Playwright driving Debian's Chromium, against the real broker."""

from __future__ import annotations

import http.client
import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bridge.config import Settings
from bridge.transport import Broker
from tests.conftest import Service, free_port, run_cli, run_notify, script, start_service, wait_until
from tests.test_consumers_integration import processed_count

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no chromium here (apt-get install chromium); .ci/run installs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def board_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "TCX_BRIDGE_TIMEZONE": "UTC"}


def start_board(services: list[Service], env: dict[str, str], broker: Broker, settings: Settings, port: int,
                *extra: str) -> Service:  # fmt: skip
    service = start_service(services, env, broker, settings.queue("wallboard"), "wallboard", "--port", str(port),
                            *extra)  # fmt: skip
    wait_until(lambda: _answers(port), timeout=10)
    return service


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
            return True
    except OSError:
        return False


def tile(page: Any, name: str) -> str:
    return str(page.text_content(f"#t-{name}")).strip()


def test_tiles_show_exactly_the_report_for_the_day(
    chromium: Any, board_env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    port = free_port()
    start_service(services, board_env, broker, settings.queue("analytics"), "consume", "analytics")
    start_board(services, board_env, broker, settings, port)
    played = run_cli(board_env, "simulate", "--calls", "24", "--desks", "4", "--seed", "5", "--speed", "600",
                     timeout=120)  # fmt: skip
    assert played.returncode == 0, played.stderr
    launches = int(played.stdout.split()[0])
    wait_until(lambda: processed_count(settings, "analytics") == launches, timeout=60)
    wait_until(lambda: processed_count(settings, "wallboard") == launches, timeout=60)
    today = datetime.now(UTC).date().isoformat()
    report = json.loads(run_cli(board_env, "report", "--format", "json").stdout)
    day = next(row for row in report["by_day"] if row["day"] == today)
    page = chromium.new_page()
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_selector("#link.online")
    wait_until(lambda: tile(page, "answered") == str(day["answered"]), timeout=5)
    assert tile(page, "missed") == str(day["missed"])
    assert tile(page, "answer_rate") == f"{day['answer_rate'] * 100:.1f}%"
    # the page rounds as JavaScript's Math.round does (half up), not as Python's round (half to even)
    assert tile(page, "ring_avg") == f"{math.floor(day['ring_avg'] + 0.5)}s"
    assert tile(page, "talk_avg") == f"{math.floor(day['talk_avg'] + 0.5)}s"
    assert page.locator("[data-desk]").count() == 4
    page.close()


def test_a_call_rings_is_answered_and_ends_on_the_page_within_a_second(
    chromium: Any, board_env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    port = free_port()
    contacts = Path(board_env["TCX_BRIDGE_DATA_DIR"]).parent / "c.csv"
    contacts.write_text("Name;Telefon\nAnna Muster;079 123 45 67\n")
    assert run_cli(board_env, "contacts", "import", str(contacts)).returncode == 0
    board = start_board(services, board_env, broker, settings, port)
    page = chromium.new_page(viewport={"width": 1920, "height": 1080})
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_selector("#link.online")
    desk = f'[data-desk="{settings.desk}"]'
    steps = [
        (["/N:S", "/C:0791234567", "/T:I", "/I:live-1"], "ringing"),
        (["/N:C", "/T:I", "/I:live-1"], "talking"),
        (["/N:E", "/T:I", "/I:live-1"], "idle"),
    ]
    for argv, state in steps:
        assert run_notify(board_env, *argv).returncode == 0
        started = time.monotonic()
        page.wait_for_selector(f'{desk}[data-state="{state}"]', timeout=1000)  # within 1 s of the event
        print(f"{state}: {1000 * (time.monotonic() - started):.0f} ms after notify returned")
        if state == "ringing":
            assert "Anna Muster" in str(page.text_content(desk))
            assert "079 123 45 67" in str(page.text_content(desk))  # national: the region's own number
            assert tile(page, "ringing") == "1"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "wallboard-ringing.png"))
    assert tile(page, "answered") == "1"
    assert tile(page, "ringing") == "0"

    board.stop()  # restart: the page reconnects by itself and shows the same numbers
    page.wait_for_selector("#link.offline", timeout=5000)
    start_board(services, board_env, broker, settings, port)
    page.wait_for_selector("#link.online", timeout=10000)
    assert tile(page, "answered") == "1"
    page.screenshot(path=str(ARTIFACTS / "wallboard.png"))
    page.close()


def test_a_non_local_bind_needs_the_token(
    chromium: Any, board_env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    port = free_port()
    refused = run_cli(board_env, "wallboard", "--host", "0.0.0.0", "--port", str(port), timeout=20)
    assert refused.returncode == 1
    assert "set TCX_BRIDGE_WALLBOARD_TOKEN" in refused.stderr.strip().splitlines()[-1]

    token_env = {**board_env, "TCX_BRIDGE_WALLBOARD_TOKEN": "s3cret-token-of-the-board"}
    service = start_service(services, token_env, broker, settings.queue("wallboard"), "wallboard", "--host",
                            "0.0.0.0", "--port", str(port), "--mask-numbers")  # fmt: skip
    wait_until(lambda: _answers(port), timeout=10)
    for path in ("/", "/api/state", "/events", "/static/app.js"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5)
        assert caught.value.code == 401
        assert caught.value.headers["Content-Security-Policy"].startswith("default-src 'none'")
    bearer = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/state", headers={"Authorization": "Bearer s3cret-token-of-the-board"}
    )
    with urllib.request.urlopen(bearer, timeout=5) as response:
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert run_notify(token_env, "/N:S", "/C:0791234567", "/T:I", "/I:masked").returncode == 0
    page = chromium.new_page()
    page.goto(f"http://127.0.0.1:{port}/?token=s3cret-token-of-the-board")  # once; then the cookie
    assert "token" not in page.url
    page.wait_for_selector(f'[data-desk="{settings.desk}"][data-state="ringing"]', timeout=5000)
    text = str(page.text_content(f'[data-desk="{settings.desk}"]'))
    assert "4567" in text
    assert "079 123" not in text  # --mask-numbers
    page.reload()
    page.wait_for_selector("#link.online")
    page.close()
    assert service.process.poll() is None


READ_BOARD = """() => {
  const cards = [...document.querySelectorAll("[data-desk]")];
  const sum = (name) => cards.reduce((total, card) => total + Number(card.dataset[name]), 0);
  return {
    tiles: { ringing: document.getElementById("t-ringing").textContent,
             talking: document.getElementById("t-talking").textContent },
    cards: { ringing: String(sum("ringing")), talking: String(sum("talking")) },
    showing: { ringing: cards.filter((c) => c.dataset.state === "ringing").length,
               talking: cards.filter((c) => c.dataset.state === "talking").length },
  };
}"""  # one evaluation: tiles and cards read from the same render


def test_tiles_equal_desk_cards_during_a_simulation_with_lost_end_events(
    chromium: Any, board_env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    env = {**board_env, "TCX_BRIDGE_WALLBOARD_LOST_AFTER": "5s"}
    port = free_port()
    start_board(services, env, broker, settings, port)
    # two calls whose end event never comes: one left ringing, one left talking
    for argv in (["/N:S", "/C:0791234567", "/T:I", "/I:lost-1"], ["/N:S", "/C:0441234500", "/T:I", "/I:lost-2"],
                 ["/N:C", "/T:I", "/I:lost-2"]):  # fmt: skip
        assert run_notify(env, *argv).returncode == 0
    page = chromium.new_page(viewport={"width": 1920, "height": 1080})
    page.goto(f"http://127.0.0.1:{port}/")
    desk = f'[data-desk="{settings.desk}"]'
    page.wait_for_selector(f'{desk}[data-ringing="1"][data-talking="1"]', timeout=5000)
    assert (tile(page, "ringing"), tile(page, "talking")) == ("1", "1")
    simulation = subprocess.Popen(
        [*script("tcx-bridge"), "simulate", "--calls", "30", "--desks", "4", "--seed", "3", "--speed", "40"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    samples = []
    while simulation.poll() is None:
        board = page.evaluate(READ_BOARD)
        assert board["tiles"] == board["cards"], board  # one story, at every moment
        samples.append(board)
        page.wait_for_timeout(100)
    out, err = simulation.communicate()
    assert simulation.returncode == 0, err
    launches = int(out.split()[0])
    wait_until(lambda: processed_count(settings, "wallboard") == launches + 3, timeout=60)
    # the simulation had several calls live at once, and more calls than desks showing them
    assert max(int(s["tiles"]["ringing"]) + int(s["tiles"]["talking"]) for s in samples) >= 3
    assert any(int(s["tiles"]["talking"]) > s["showing"]["talking"] for s in samples) or any(
        int(s["tiles"]["ringing"]) > s["showing"]["ringing"] for s in samples
    )
    # 5 s after their last event the two calls turn "no end seen" by themselves (no event comes any more)
    page.wait_for_selector(f'{desk}[data-no-end-seen="2"]', timeout=10_000)
    wait_until(lambda: page.evaluate(READ_BOARD)["tiles"] == {"ringing": "0", "talking": "0"}, timeout=10)
    assert page.evaluate(READ_BOARD)["cards"] == {"ringing": "0", "talking": "0"}
    assert "2 no end seen" in str(page.text_content(desk))
    assert str(page.text_content("#no-end")) == "\u00b7 2 no end seen (after 5s)"
    assert tile(page, "wait") == "-"  # the lost ringing call no longer turns "Longest wait" red
    page.close()


def test_times_use_the_board_zone_and_a_24_hour_clock(
    chromium: Any, board_env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    env = {**board_env, "TCX_BRIDGE_TIMEZONE": "Asia/Kolkata"}  # UTC+05:30: not the browser's
    port = free_port()
    start_board(services, env, broker, settings, port)
    assert run_notify(env, "/N:S", "/C:+4930123456", "/T:I", "/I:zone-1").returncode == 0
    page = chromium.new_page(locale="en-US", timezone_id="America/New_York")  # a 12-hour browser
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_selector("#recent tbody tr")
    zone = ZoneInfo("Asia/Kolkata")
    expected = {(datetime.now(zone) - timedelta(minutes=m)).strftime("%H:%M") for m in (0, 1)}
    assert page.text_content("#recent tbody tr td") in expected
    assert page.text_content("#now") in expected | {datetime.now(zone).strftime("%H:%M")}
    assert "(Asia/Kolkata)" in str(page.text_content("#day"))
    assert "+49 30 123456" in str(page.text_content("#recent tbody tr"))  # a foreign number: international
    # the chart: two axes, hour labels in the board's zone, a bar per 15-minute slot with its time
    assert page.locator("#chart line.axis").count() == 2
    labels = page.locator("#chart text.tick.x").all_text_contents()
    assert labels
    assert all(len(label) == 5 and label.endswith(":00") for label in labels)
    assert labels[-1] <= datetime.now(zone).strftime("%H:%M")
    bars = page.locator("#chart rect.bar").count()
    assert bars % 4 == 0  # whole hours of 15-minute slots, from the first busy hour (or 6 hours ago) to now
    assert bars >= min(24, 4 * (datetime.now(zone).hour + 1))
    busy = page.locator('#chart rect.bar:not([data-calls="0"])')
    assert busy.count() == 1
    assert re.fullmatch(r"\d\d:\d\d\u2013\d\d:\d\d: 1 call", str(busy.locator("title").text_content()))
    page.close()

    us = {**env, "TCX_BRIDGE_WALLBOARD_LOCALE": "en-US"}  # the locale says otherwise: a 12-hour clock
    services[-1].stop()
    start_board(services, us, broker, settings, port)
    page = chromium.new_page()
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_selector("#recent tbody tr")
    assert re.fullmatch(r"\d\d:\d\d [AP]M", str(page.text_content("#recent tbody tr td")))
    page.close()


def test_connecting_before_the_first_snapshot_and_long_desk_names_cut(
    chromium: Any, board_env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    port = free_port()
    start_board(services, board_env, broker, settings, port)
    page = chromium.new_page()
    page.route("**/events", lambda route: None)  # the stream never answers
    page.goto(f"http://127.0.0.1:{port}/")
    link = page.locator("#link")
    assert (link.text_content(), link.get_attribute("class")) == ("connecting\u2026", "status connecting")
    page.close()

    long = "front-desk-" + "x" * 53  # 64 characters
    assert (
        run_notify({**board_env, "TCX_BRIDGE_DESK": long}, "/N:S", "/C:0791234567", "/T:I", "/I:l").returncode
        == 0
    )
    assert run_notify(board_env, "/N:S", "/C:0791234568", "/T:I", "/I:n").returncode == 0
    page = chromium.new_page(viewport={"width": 1600, "height": 900})
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_selector(f'[data-desk="{long}"]')
    name = page.locator(f'[data-desk="{long}"] .name')
    assert name.get_attribute("title") == long  # the whole name as a tooltip
    assert name.evaluate("node => node.scrollWidth > node.clientWidth")  # cut with an ellipsis
    card = page.locator(f'[data-desk="{long}"]').bounding_box()
    neighbour = page.locator(f'[data-desk="{settings.desk}"]').bounding_box()
    assert card is not None
    assert neighbour is not None
    assert card["x"] + card["width"] <= neighbour["x"] or neighbour["x"] + neighbour["width"] <= card["x"]
    page.close()


def test_an_ipv6_bind_prints_its_url_in_brackets(
    board_env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    port = free_port()
    service = start_service(services, board_env, broker, settings.queue("wallboard"), "wallboard", "--host",
                            "::1", "--port", str(port))  # fmt: skip
    wait_until(lambda: "wallboard on" in service.output(), timeout=10)
    assert f"wallboard on http://[::1]:{port}/ (day in UTC)" in service.output()
    connection = http.client.HTTPConnection("::1", port, timeout=5)
    connection.request("GET", "/api/state")  # Host: [::1]:port, the bind
    assert connection.getresponse().status == 200
    connection.close()


def test_an_ipv6_bind_is_printed_as_a_url_in_brackets_and_answers_there(
    board_env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    """`wallboard --host ::1` says http://[::1]:PORT/ (not http://::1:PORT/), a URL a browser opens."""
    port = free_port()
    service = start_service(
        services,
        board_env,
        broker,
        settings.queue("wallboard"),
        "wallboard",
        "--host",
        "::1",
        "--port",
        str(port),
    )
    url = f"http://[::1]:{port}/"
    wait_until(lambda: f"wallboard on {url} (day in UTC)" in service.output(), timeout=10)
    with urllib.request.urlopen(f"{url}healthz", timeout=5) as answer:
        assert answer.status == 200
