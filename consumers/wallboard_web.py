"""The wallboard's web side: one page, pushed live with Server-Sent Events (Starlette + uvicorn).

The boundary to the browser, like transport.py is to the broker: routes, the
token check, security headers, and the SSE fan-out of snapshots made by the
consumer thread. uvicorn runs in a thread of its own; the consume loop keeps the
main thread (and SIGTERM).

    /             the page (index.html, app.js, app.css from the package; no inline script)
    /events       text/event-stream: the snapshot now, then every change
    /api/state    the snapshot as JSON
    /healthz      200

Access: bound to 127.0.0.1 by default. Any other bind needs ``wallboard_token``;
a request shows it once as ``?token=`` (then kept in an HttpOnly cookie) or as
``Authorization: Bearer``; without it: 401.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError

STATIC = Path(__file__).parent / "wallboard_static"
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


class Fanout:
    """Snapshots from the consumer thread to every open /events stream."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] = {}
        self._streams: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str]]] = []
        self._lock = threading.Lock()

    def publish(self, state: dict[str, Any]) -> None:
        self.latest = state
        data = json.dumps(state)
        with self._lock:
            streams = list(self._streams)
        for loop, queue in streams:
            loop.call_soon_threadsafe(_replace, queue, data)

    def open(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        with self._lock:
            self._streams.append((asyncio.get_running_loop(), queue))
        if self.latest:
            queue.put_nowait(json.dumps(self.latest))
        return queue

    def close(self, queue: asyncio.Queue[str]) -> None:
        with self._lock:
            self._streams = [(loop, q) for loop, q in self._streams if q is not queue]


def _replace(queue: asyncio.Queue[str], data: str) -> None:
    """Keep only the newest snapshot for a slow browser."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(data)


def make_app(fanout: Fanout, token: str | None) -> Any:
    """The Starlette application."""
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import (
            FileResponse,
            JSONResponse,
            PlainTextResponse,
            RedirectResponse,
            Response,
            StreamingResponse,
        )
        from starlette.routing import Route
    except ImportError:
        raise ConfigError(
            "the wallboard needs Starlette and uvicorn: pip install 'tcx-bridge[wallboard]'"
        ) from None

    def allowed(request: Request) -> bool:
        if token is None:
            return True
        given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
        return hmac.compare_digest(given.encode(), token.encode())

    async def page(request: Request) -> Response:
        if token is not None and request.query_params.get("token"):
            response: Response = RedirectResponse("/", status_code=303)  # the token leaves the address bar
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=30 * 86400)
            return response
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("app.js", "app.css"):
            return PlainTextResponse("not found\n", status_code=404)
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return FileResponse(STATIC / name, media_type=kind)

    async def state(request: Request) -> Response:
        return JSONResponse(fanout.latest)

    async def events(request: Request) -> Response:
        queue = fanout.open()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n\n"  # the browser reconnects within a second after a restart
                while True:
                    try:
                        data = await asyncio.wait_for(queue.get(), timeout=15)
                    except TimeoutError:
                        yield ": ping\n\n"
                        continue
                    yield f"data: {data}\n\n"
            finally:
                fanout.close(queue)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
        )

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    class Guard:
        """401 without the token; security headers on every response."""

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            request = Request(scope)

            async def with_headers(message: Any) -> None:
                if message["type"] == "http.response.start":
                    extra = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
                    message["headers"] = list(message.get("headers", [])) + extra
                await send(message)

            if scope["path"] != "/healthz" and not allowed(request):
                denied = PlainTextResponse(
                    "401: give the wallboard token (?token=... once, or a bearer header)\n", status_code=401
                )
                await denied(scope, receive, with_headers)
                return
            await self.app(scope, receive, with_headers)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/static/{name}", static),
            Route("/api/state", state),
            Route("/events", events),
            Route("/healthz", healthz),
        ]
    )
    return Guard(app)


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
