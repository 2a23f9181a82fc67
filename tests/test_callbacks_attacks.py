"""Attacks on the wallboard's Call back button, as a browser or a script without the dial token would try.

A real wallboard web server (uvicorn, the routes and guard the wallboard runs) with
a read-only ``wallboard_token`` and a separate ``wallboard_dial_token``. A request
that gets past every check dials through the broker; here the broker URL leads
nowhere, so such a request answers 502 (the positive control): every attack must be
refused before, with 401, 403, 405 or 429.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.config import load_settings
from consumers.callbacks.web import DIAL_COOKIE, dial_routes
from consumers.wallboard.routes import make_app
from consumers.wallboard.web import COOKIE, Fanout, HostCheck, WebServer
from tests.conftest import free_port_in

READ = "read-only-token-of-the-wall-0001"
DIAL = "dial-token-of-the-supervisor-0001"


def csrf_of(token: str) -> str:
    """The CSRF token a board with this dial token gives out (consumers.callbacks.web.Button)."""
    return hmac.new(token.encode(), b"tcx-bridge wallboard csrf", hashlib.sha256).hexdigest()


def port_of_ours() -> int:
    """A free port in this module's range (18400-18449)."""
    return free_port_in(range(18449, 18399, -1))


def serve(data_dir: Path) -> WebServer:
    environ = {
        "TCX_BRIDGE_CONFIG": os.devnull,
        "TCX_BRIDGE_DATA_DIR": str(data_dir),
        "TCX_BRIDGE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F",  # nothing listens: a dial answers 502
        "TCX_BRIDGE_WALLBOARD_DIAL_TOKEN": DIAL,
    }
    settings = load_settings(environ=environ).settings
    app = make_app(Fanout(), READ, hosts=HostCheck("127.0.0.1"), routes=dial_routes(settings, READ))
    server = WebServer(app, "127.0.0.1", port_of_ours())
    server.start()
    return server


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One board for the table of attacks (fewer wrong tokens than its throttle lets through)."""
    server = serve(tmp_path_factory.mktemp("board"))
    yield server.server.config.port
    server.stop()


def ask(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, body=b"{}" if method == "POST" else None, headers=headers)
    answer = connection.getresponse()
    found = answer.status, answer.read().decode()
    connection.close()
    return found


def cookies(**values: str) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in values.items())}


READER = {COOKIE: READ}
DIAL_URL = "/api/callbacks/1/dial"


@pytest.mark.parametrize(
    ("attack", "method", "path", "headers", "status"),
    [
        ("the read-only token alone", "POST", DIAL_URL, cookies(**READER), 403),
        ("the read-only token as the dial cookie", "POST", DIAL_URL,
         {**cookies(**READER, **{DIAL_COOKIE: READ}), "X-CSRF-Token": csrf_of(READ)}, 403),
        ("the CSRF token without the dial cookie", "POST", DIAL_URL,
         {**cookies(**READER), "X-CSRF-Token": csrf_of(DIAL)}, 403),
        ("the dial cookie without the CSRF token", "POST", DIAL_URL, cookies(**READER, **{DIAL_COOKIE: DIAL}), 403),
        ("the dial token as the CSRF token", "POST", DIAL_URL,
         {**cookies(**READER, **{DIAL_COOKIE: DIAL}), "X-CSRF-Token": DIAL}, 403),
        ("another board's CSRF token", "POST", DIAL_URL,
         {**cookies(**READER, **{DIAL_COOKIE: DIAL}), "X-CSRF-Token": csrf_of("another-dial-token-0000")}, 403),
        ("a page of another site", "POST", DIAL_URL,
         {**cookies(**READER, **{DIAL_COOKIE: DIAL}), "X-CSRF-Token": csrf_of(DIAL), "Origin": "http://evil.example"}, 403),
        ("a sandboxed page (Origin null)", "POST", DIAL_URL,
         {**cookies(**READER, **{DIAL_COOKIE: DIAL}), "X-CSRF-Token": csrf_of(DIAL), "Origin": "null"}, 403),
        ("a GET, as a link or an image would", "GET", DIAL_URL,
         {**cookies(**READER, **{DIAL_COOKIE: DIAL}), "X-CSRF-Token": csrf_of(DIAL)}, 405),
        ("the dial token instead of the read-only one", "POST", DIAL_URL,
         {"Authorization": f"Bearer {DIAL}", **cookies(**{DIAL_COOKIE: DIAL}), "X-CSRF-Token": csrf_of(DIAL)}, 401),
        ("a foreign Host (DNS rebinding)", "POST", DIAL_URL,
         {**cookies(**READER, **{DIAL_COOKIE: DIAL}), "X-CSRF-Token": csrf_of(DIAL), "Host": "evil.example"}, 421),
        ("the CSRF token asked with the read-only token", "GET", "/api/dial", cookies(**READER), 403),
        ("a login with the read-only token", "GET", f"/dial-login?dial_token={READ}", cookies(**READER), 403),
        ("everything right: the dial goes to the broker", "POST", DIAL_URL,
         {**cookies(**READER, **{DIAL_COOKIE: DIAL}), "X-CSRF-Token": csrf_of(DIAL), "Origin": "http://127.0.0.1"}, 502),
    ],
)  # fmt: skip
def test_the_call_back_button_refuses_every_request_without_the_dial_token_and_csrf(
    board: int, attack: str, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    if headers.get("Origin") == "http://127.0.0.1":
        headers = {**headers, "Origin": f"http://127.0.0.1:{board}"}
    assert ask(board, method, path, headers)[0] == status, attack


def test_guessing_the_dial_token_is_throttled(tmp_path: Path) -> None:
    """Wrong dial cookies close the door for a while: then even the right one learns nothing."""
    server = serve(tmp_path)
    board = server.server.config.port
    for n in range(6):
        ask(board, "GET", "/api/dial", cookies(**READER, **{DIAL_COOKIE: f"guess-{n:027d}"}))
    try:
        assert ask(board, "GET", "/api/dial", cookies(**READER, **{DIAL_COOKIE: DIAL}))[0] == 429
    finally:
        server.stop()
