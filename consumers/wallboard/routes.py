"""The wallboard's routes (Starlette): the page, its static files, the snapshot, the event stream, and the
guard in front of them (Host check, token, throttle, security headers). Needs Starlette (the extra
``tcx-bridge[wallboard]``); the wallboard command says so in one line when it is missing.
"""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

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

from consumers.wallboard.web import COOKIE, HEADERS, STATIC, Fanout, HostCheck, Throttle, check_token


def make_app(
    fanout: Fanout,
    token: str | None,
    *,
    hosts: Callable[[str | None], bool] | None = None,
    throttle: Throttle | None = None,
    routes: Sequence[Route] = (),
) -> Any:
    """The Starlette application: Host checked by hosts (default: a 127.0.0.1 bind's), tokens throttled.

    routes: more routes behind the same guard (the Call back button's, consumers.callbacks.web).
    """
    check_token(token)
    hosts = hosts or HostCheck("127.0.0.1")
    throttle = throttle or Throttle()
    pages = Pages(fanout, token)
    app = Starlette(
        routes=[
            Route("/", pages.page),
            Route("/static/{name}", pages.static),
            Route("/api/state", pages.state),
            Route("/events", pages.events),
            Route("/healthz", pages.healthz),
            *routes,
        ]
    )
    return Guard(app, token, hosts, throttle)


def refusal(
    request: Request, token: str | None, hosts: Callable[[str | None], bool], throttle: Throttle
) -> Response | None:
    """None when the request may go on; else the answer: 421 (Host), 429 (throttled) or 401."""
    host = request.headers.get("host")
    if not hosts(host):
        return PlainTextResponse(
            f"421: {host!r} is not this wallboard's host; add it to wallboard_hostnames "
            "(TCX_BRIDGE_WALLBOARD_HOSTNAMES) if it is yours\n",
            status_code=421,
        )
    if token is None:
        return None
    given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        given = header[7:].strip()
    if not given:
        return PlainTextResponse(
            "401: give the wallboard token (?token=... once, or a bearer header)\n", status_code=401
        )
    client = Throttle.client(request.client.host if request.client else None)
    wait = throttle.wait(client)
    if wait > 0:
        return PlainTextResponse(
            f"429: too many wrong tokens from here; try again in {math.ceil(wait)}s\n",
            status_code=429,
            headers={"Retry-After": str(math.ceil(wait))},
        )
    if hmac.compare_digest(given.encode(), token.encode()):
        throttle.succeeded(client)
        return None
    throttle.failed(client)
    return PlainTextResponse("401: wrong wallboard token\n", status_code=401)


class Pages:
    """The handlers: the page, its two static files, the snapshot as JSON, the event stream, health."""

    def __init__(self, fanout: Fanout, token: str | None) -> None:
        self.fanout, self.token = fanout, token

    async def page(self, request: Request) -> Response:
        if self.token is not None and request.query_params.get("token"):
            response: Response = RedirectResponse("/", status_code=303)  # the token leaves the address bar
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", max_age=30 * 86400)
            return response
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("app.js", "app.css", "callbacks.js"):
            return PlainTextResponse("not found\n", status_code=404)
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return FileResponse(STATIC / name, media_type=kind)

    async def state(self, request: Request) -> Response:
        return JSONResponse(self.fanout.latest)

    async def events(self, request: Request) -> Response:
        queue, missed = self.fanout.open(request.headers.get("last-event-id"))

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 1000\n\n"  # the browser reconnects within a second after a restart
                for data in missed:  # what it missed since the id it reconnected with (or the board now)
                    yield data
                while True:
                    try:
                        async with asyncio.timeout(15):
                            data = await queue.get()
                    except TimeoutError:
                        yield b": ping\n\n"
                        continue
                    yield data
            finally:
                self.fanout.close(queue)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
        )

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")


class Guard:
    """421 for a foreign Host, 401/429 without the token; security headers on every response."""

    def __init__(
        self, app: Any, token: str | None, hosts: Callable[[str | None], bool], throttle: Throttle
    ) -> None:
        self.app, self.token, self.hosts, self.throttle = app, token, hosts, throttle

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        denied = None
        if scope["path"] != "/healthz":
            denied = refusal(Request(scope), self.token, self.hosts, self.throttle)
        if denied is not None:
            await denied(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)
