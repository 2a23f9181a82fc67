"""The wallboard's web side: one page, pushed live with Server-Sent Events (Starlette + uvicorn).

The boundary to the browser, like transport.py is to the broker: routes, the
token check, security headers, and the SSE fan-out of snapshots made by the
consumer thread. uvicorn runs in a thread of its own; the consume loop keeps the
main thread (and SIGTERM).

    /             the page (index.html, app.js, app.css from the package; no inline script)
    /events       text/event-stream: the snapshot now, then every change; each has an id, and a
                  browser reconnecting with Last-Event-ID gets the ones it missed (Fanout)
    /api/state    the snapshot as JSON
    /healthz      200

Access: bound to 127.0.0.1 by default. Any other bind needs ``wallboard_token``
(at least MIN_TOKEN characters, checked at start); a request shows it once as
``?token=`` (then kept in an HttpOnly cookie) or as ``Authorization: Bearer``;
without it: 401. A client that keeps giving wrong tokens gets 429 with a
``Retry-After`` that doubles (Throttle). Every request's ``Host`` (but /healthz's)
must name this board -- its bind address, ``localhost`` on a loopback bind, any address or the
machine's name on a wildcard bind, or one of ``wallboard_hostnames`` -- else 421:
a page on another site cannot read the board through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from bridge.errors import ConfigError

STATIC = Path(__file__).parent / "static"
MIN_TOKEN = 16
COOKIE = "tcx_wallboard"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(token: str | None) -> None:
    """ConfigError for a token short enough to guess (its value is never shown)."""
    if token is not None and len(token) < MIN_TOKEN:
        raise ConfigError(
            f"wallboard_token: {len(token)} characters is too short to resist guessing; give at least "
            f"{MIN_TOKEN}, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class HostCheck:
    """Which ``Host`` headers name this board (against DNS rebinding: a name an attacker owns is refused)."""

    def __init__(self, bind: str, hostnames: Iterable[str] = ()) -> None:
        self.names = {name.lower().rstrip(".") for name in hostnames if name}
        address = _address(bind)
        self.any_address = address is not None and address.is_unspecified
        self.loopback = is_local(bind)
        if address is not None and not self.any_address:
            self.addresses = {address}
        else:
            self.addresses = set()
            if not self.any_address:
                self.names.add(bind.lower().rstrip("."))
        if self.loopback:
            self.names.add("localhost")
        if self.any_address:
            self.names |= {"localhost", socket.gethostname().lower().rstrip(".")}
            self.names.add(socket.gethostname().lower().split(".")[0])

    def __call__(self, header: str | None) -> bool:
        if not header:
            return False
        host = header.strip().lower()
        if host.startswith("["):
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        host = host.rstrip(".")
        address = _address(host)
        if address is None:
            return host in self.names
        return self.any_address or address in self.addresses or (self.loopback and address.is_loopback)


class Throttle:
    """Wrong tokens per client: FREE of them answered, then each closes the door for a doubling time.

    A client is an IPv4 address or an IPv6 /64. While the door is closed every request
    presenting a token gets 429 (right or wrong: guesses learn nothing); a right token
    when it is open forgets the client's failures.
    """

    FREE = 5
    FIRST = 1.0  # seconds closed after the first failure beyond FREE
    LONGEST = 300.0
    KEEP = 3600.0  # failures forgotten after this long without one
    LIMIT = 10_000  # clients remembered at most

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failures: dict[str, tuple[int, float, float]] = {}  # client: (count, last, closed until)

    @staticmethod
    def client(host: str | None) -> str:
        address = _address(host or "")
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
        return str(address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else address or host)

    def wait(self, client: str) -> float:
        """Seconds until client may try a token again (0: now)."""
        _, _, until = self.failures.get(client, (0, 0.0, 0.0))
        return max(0.0, until - self.clock())

    def failed(self, client: str) -> None:
        now = self.clock()
        count, last, _ = self.failures.get(client, (0, now, 0.0))
        if now - last > self.KEEP:
            count = 0
        count += 1
        closed = min(self.LONGEST, self.FIRST * 2 ** (count - self.FREE - 1)) if count > self.FREE else 0.0
        self.failures[client] = (count, now, now + closed)
        if len(self.failures) > self.LIMIT:
            self.failures = {k: v for k, v in self.failures.items() if now - v[1] <= self.KEEP}
            while len(self.failures) > self.LIMIT:
                self.failures.pop(next(iter(self.failures)))

    def succeeded(self, client: str) -> None:
        self.failures.pop(client, None)


JSON = msgspec.json.Encoder()  # a snapshot each change: a few times faster than json.dumps


def frame(state: dict[str, Any], event_id: str | None = None) -> bytes:
    """A snapshot as one server-sent event (with its id: a browser that reconnects sends it back)."""
    head = b"id: " + event_id.encode() + b"\n" if event_id else b""
    return head + b"data: " + JSON.encode(state) + b"\n\n"


class Fanout:
    """Snapshots from the consumer thread to every open /events stream, each with an id.

    An id is ``<boot>-<n>``: this process's start and the snapshot's number. A
    browser reconnecting with ``Last-Event-ID`` gets the snapshots it missed (the
    last REPLAY of them kept), in order; from another process (the wallboard
    restarted and built its day again from the history) or from too long ago, the
    newest one, which holds the whole board.
    """

    REPLAY = 100

    def __init__(self) -> None:
        self.latest: dict[str, Any] = {}
        self.boot = f"{time.time_ns() // 1_000_000:x}"
        self.sequence = 0
        self._recent: deque[tuple[int, bytes]] = deque(maxlen=self.REPLAY)
        self._streams: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[bytes]]] = []
        self._lock = threading.Lock()

    def publish(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.sequence += 1
            data = frame(state, f"{self.boot}-{self.sequence}")
            self._recent.append((self.sequence, data))
            self.latest = state
            streams = list(self._streams)
        for loop, queue in streams:
            loop.call_soon_threadsafe(_replace, queue, data)

    def open(self, last_event_id: str | None = None) -> tuple[asyncio.Queue[bytes], list[bytes]]:
        """A stream's queue, and the snapshots to send first: those after last_event_id, or the newest."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        with self._lock:
            self._streams.append((asyncio.get_running_loop(), queue))
            missed = self._missed(last_event_id)
        return queue, missed

    def _missed(self, last_event_id: str | None) -> list[bytes]:
        if not self._recent:
            return []
        boot, _, number = (last_event_id or "").strip().partition("-")
        readable = number.isascii() and number.isdigit() and len(number) <= 18  # what int() takes, always
        seen = int(number) if boot == self.boot and readable else None
        if seen is None or seen < self._recent[0][0] - 1:
            return [self._recent[-1][1]]  # unknown or too old: the whole board now
        return [data for sequence, data in self._recent if sequence > seen]

    def close(self, queue: asyncio.Queue[bytes]) -> None:
        with self._lock:
            self._streams = [(loop, q) for loop, q in self._streams if q is not queue]


def _replace(queue: asyncio.Queue[bytes], data: bytes) -> None:
    """Keep only the newest snapshot for a slow browser."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(data)


class WebServer:
    """uvicorn serving the app in a thread of its own."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="wallboard-web", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        waited = 0.0
        while not self.server.started and self.thread.is_alive() and waited < timeout:
            threading.Event().wait(0.05)
            waited += 0.05
        if not self.server.started:
            raise ConfigError("the wallboard's web server did not start (is the port taken?)")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
