"""A local HTTP receiver for the webhooks tests and bench: each path answers as told and records what came."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple


class Request(NamedTuple):
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.time() when it arrived


Answer = tuple[int, dict[str, str]]  # status, headers
Behaviour = Callable[[Request], Answer | None]  # None: never answer (until the receiver stops)


def ok(_: Request) -> Answer:
    return 200, {}


class Receiver:
    """ThreadingHTTPServer on 127.0.0.1:port; ``behaviours[path]`` answers (default 200), ``received[path]`` records."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.behaviours: dict[str, Behaviour] = {}
        self.received: dict[str, list[Request]] = {}
        self.check: Callable[[Request], None] | None = None  # runs on every request; an error fails it (500)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # kept-alive connections, as httpx pools them

            def do_POST(self) -> None:  # http.server's name
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                request = Request(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                )
                status, headers = receiver.answer(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, request: Request) -> Answer:
        if self.check is not None:
            try:
                self.check(request)
            except Exception as error:  # noqa: BLE001  # recorded for the test to assert on
                with self._lock:
                    self.errors.append(f"{request.path}: {type(error).__name__}: {error}")
                return 500, {}
        behaviour = self.behaviours.get(request.path, ok)
        answer = behaviour(request)
        with self._lock:
            self.received.setdefault(request.path, []).append(request)
        if answer is None:  # hang until the receiver stops
            self._stopping.wait(120)
            return 503, {}
        return answer

    def count(self, path: str) -> int:
        with self._lock:
            return len(self.received.get(path, []))

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()


def statuses(*answers: int | Answer) -> Behaviour:
    """Answer these in turn, then 200 for ever."""
    queue = [answer if isinstance(answer, tuple) else (answer, {}) for answer in answers]
    lock = threading.Lock()

    def behave(_: Request) -> Answer:
        with lock:
            return queue.pop(0) if queue else (200, {})

    return behave
