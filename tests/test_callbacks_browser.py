"""The wallboard's Callbacks panel and Call back button in Chromium, against the real broker and an agent."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest

from bridge.config import Settings
from bridge.transport import Broker
from consumers.store.core import open_store
from tests.conftest import Service, run_notify, start_service, wait_until
from tests.test_callbacks_integration import installed, port_of_ours
from tests.test_wallboard_browser import _answers, chromium  # noqa: F401  # the browser fixture

pytestmark = pytest.mark.integration
DIAL_TOKEN = "dial-token-for-the-supervisor-1"
CALLER = "+41791234599"
WATCH = """() => {
  window.seenDials = [];
  const look = () => {
    const row = document.querySelector('[data-task="1"]');
    const dial = row && row.dataset.dial;
    if (dial && window.seenDials[window.seenDials.length - 1] !== dial) window.seenDials.push(dial);
  };
  new MutationObserver(look).observe(document.getElementById("callbacks"), { subtree: true, childList: true, attributes: true });
}"""


def post(port: int, path: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=b"{}", method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def task_row(settings: Settings) -> dict[str, Any] | None:
    store = open_store(settings, "callbacks")
    try:
        row = store.execute("SELECT * FROM callbacks WHERE id = 1").fetchone()
        return dict(row) if row is not None else None
    finally:
        store.close()


def test_call_back_button_only_with_the_dial_token_and_csrf(
    chromium: Any,  # noqa: F811  # the fixture imported above
    env: dict[str, str],
    broker: Broker,
    settings: Settings,
    services: list[Service],
) -> None:
    env = {**env, "TCX_BRIDGE_TIMEZONE": "UTC", "TCX_BRIDGE_WALLBOARD_DIAL_TOKEN": DIAL_TOKEN}
    start_service(services, env, broker, settings.queue("callbacks"), "consume", "callbacks")
    assistant = {
        "TCX_BRIDGE_ASSISTANT": installed("tcx-bridge-fake-assistant"),
        "TCX_FAKE_ASSISTANT_PAUSE": "0.5",
    }
    # the call connects 1.5 s after the Assistant reported it: the page shows "confirmed" that long
    start_service(services, {**env, **assistant}, broker, settings.queue(f"desk.{settings.desk}"), "agent")
    port = port_of_ours()
    start_service(services, env, broker, settings.queue("wallboard"), "wallboard", "--port", str(port))
    wait_until(lambda: _answers(port), timeout=10)
    assert run_notify(env, "/N:S", f"/C:{CALLER}", "/T:I", "/I:cb-1").returncode == 0
    assert run_notify(env, "/N:E", "/T:I", "/I:cb-1").returncode == 0

    reader = chromium.new_context()  # the read-only wallboard: the panel, no button
    page = reader.new_page()
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_selector('[data-task="1"][data-state="open"]', timeout=10000)
    assert page.text_content("#t-callbacks_open") == "1"
    assert "079 123 45 99" in str(page.text_content('[data-task="1"]'))
    page.wait_for_timeout(300)  # /api/dial has answered 403 by now
    assert page.locator("button.call-back").count() == 0
    reader.close()

    # forged POSTs: with the dial cookie but no CSRF token, or a CSRF-looking header without the cookie
    assert post(port, "/api/callbacks/1/dial", {"Cookie": f"tcx_wallboard_dial={DIAL_TOKEN}"}) == (
        403, "403: missing or wrong CSRF token\n")  # fmt: skip
    forged = post(port, "/api/callbacks/1/dial", {"X-CSRF-Token": "0" * 64})
    assert forged == (403, "403: this browser does not hold the wallboard's dial token\n")
    assert task_row(settings)["dial_state"] is None  # type: ignore[index]  # nothing was dialed

    supervisor = chromium.new_context()
    page = supervisor.new_page()
    page.goto(f"http://127.0.0.1:{port}/dial-login?dial_token={DIAL_TOKEN}")
    assert page.url == f"http://127.0.0.1:{port}/"  # the token left the address bar
    page.wait_for_selector('[data-task="1"] button.call-back', timeout=10000)
    page.evaluate(WATCH)  # records every dial state the row shows
    page.locator('[data-task="1"] button.call-back').click(timeout=10000)
    page.wait_for_selector('[data-task="1"][data-dial="reached"]', timeout=15000)
    seen = page.evaluate("window.seenDials")
    assert seen[-1] == "reached"
    assert {"dialing", "dialed", "confirmed"} & set(seen), seen  # the live state before it was reached
    assert page.text_content("#t-callbacks_open") == "0"
    row = task_row(settings)
    assert row is not None
    assert (row["outcome"], row["reached_by"], row["desk"]) == ("reached", settings.desk, settings.desk)
    supervisor.close()
