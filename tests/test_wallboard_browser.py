"""The wallboard in a real browser: Playwright driving Debian's Chromium, against the real broker."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings
from bridge.transport import Broker
from tests.conftest import Service, free_port, run_cli, run_notify, start_service, wait_until
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
    assert tile(page, "ring_avg") == f"{round(day['ring_avg'])}s"
    assert tile(page, "talk_avg") == f"{round(day['talk_avg'])}s"
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
            assert "0791234567" in str(page.text_content(desk))
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

    token_env = {**board_env, "TCX_BRIDGE_WALLBOARD_TOKEN": "s3cret-token"}
    service = start_service(services, token_env, broker, settings.queue("wallboard"), "wallboard", "--host",
                            "0.0.0.0", "--port", str(port), "--mask-numbers")  # fmt: skip
    wait_until(lambda: _answers(port), timeout=10)
    for path in ("/", "/api/state", "/events", "/static/app.js"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5)
        assert caught.value.code == 401
        assert caught.value.headers["Content-Security-Policy"].startswith("default-src 'none'")
    bearer = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/state", headers={"Authorization": "Bearer s3cret-token"}
    )
    with urllib.request.urlopen(bearer, timeout=5) as response:
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert run_notify(token_env, "/N:S", "/C:0791234567", "/T:I", "/I:masked").returncode == 0
    page = chromium.new_page()
    page.goto(f"http://127.0.0.1:{port}/?token=s3cret-token")  # once; then the cookie
    assert "token" not in page.url
    page.wait_for_selector(f'[data-desk="{settings.desk}"][data-state="ringing"]', timeout=5000)
    text = str(page.text_content(f'[data-desk="{settings.desk}"]'))
    assert "4567" in text
    assert "0791234567" not in text  # --mask-numbers
    page.reload()
    page.wait_for_selector("#link.online")
    page.close()
    assert service.process.poll() is None


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
