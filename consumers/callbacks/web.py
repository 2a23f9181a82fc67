"""The wallboard's Call back button: its routes, behind the wallboard's guard (consumers.wallboard.routes).

Only with ``wallboard_dial_token`` (a second token, never the read-only ``wallboard_token``):

    /dial-login?dial_token=…   keeps the dial token in an HttpOnly, SameSite=Strict cookie; back to /
    GET  /api/dial             200 {"csrf": …} for a browser holding the dial token (the page then
                               shows the buttons), else 403
    POST /api/callbacks/{id}/dial   {"desk": optional}: header X-CSRF-Token, the dial cookie, and an
                               Origin (when sent) of this board; else 403. Dials the task
                               (consumers.callbacks.dial) with the broker user of ``callback_dial_url``
                               (the dialer's; default amqp_url): 200 with the task's dial state,
                               409 when the task cannot be dialed, 502 when the broker refused

The CSRF token is an HMAC of the dial token: a page of another site can neither read nor
forge it, and a browser without the dial token never gets it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from bridge.config import Settings
from bridge.errors import ConfigError, TransportError
from consumers.callbacks.settings import options_of
from consumers.wallboard.web import MIN_TOKEN, Throttle

DIAL_COOKIE = "tcx_wallboard_dial"
CSRF_HEADER = "x-csrf-token"


def check_dial_token(token: str | None, read_token: str | None) -> None:
    """ConfigError for a dial token too short to resist guessing, or the read-only token again."""
    if token is None:
        return
    if len(token) < MIN_TOKEN:
        raise ConfigError(
            f"wallboard_dial_token: {len(token)} characters is too short; give at least {MIN_TOKEN}"
        )
    if read_token is not None and hmac.compare_digest(token.encode(), read_token.encode()):
        raise ConfigError("wallboard_dial_token is the read-only wallboard_token; give it a token of its own")


def dial_routes(settings: Settings, read_token: str | None) -> list[Route]:
    """The Call back routes (none without wallboard_dial_token)."""
    token = options_of(settings).wallboard_dial_token
    check_dial_token(token, read_token)
    if token is None:
        return []
    button = Button(settings, token)
    return [
        Route("/dial-login", button.login),
        Route("/api/dial", button.csrf),
        Route("/api/callbacks/{task_id:int}/dial", button.dial, methods=["POST"]),
    ]


class Button:
    """The Call back handlers for one dial token."""

    def __init__(self, settings: Settings, token: str) -> None:
        self.settings, self.token = settings, token
        self.csrf_token = hmac.new(token.encode(), b"tcx-bridge wallboard csrf", hashlib.sha256).hexdigest()
        self.throttle = Throttle()

    def _holder(self, request: Request) -> Response | None:
        """None for a browser holding the dial token; else 403 (429 after many wrong ones)."""
        given = request.cookies.get(DIAL_COOKIE, "")
        client = Throttle.client(request.client.host if request.client else None)
        wait = self.throttle.wait(client)
        if wait > 0:
            return PlainTextResponse(f"429: try again in {math.ceil(wait)}s\n", status_code=429)
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            self.throttle.succeeded(client)
            return None
        if given:
            self.throttle.failed(client)
        return PlainTextResponse(
            "403: this browser does not hold the wallboard's dial token\n", status_code=403
        )

    async def login(self, request: Request) -> Response:
        given = request.query_params.get("dial_token", "")
        client = Throttle.client(request.client.host if request.client else None)
        if self.throttle.wait(client) > 0 or not hmac.compare_digest(given.encode(), self.token.encode()):
            self.throttle.failed(client)
            return PlainTextResponse("403: wrong dial token\n", status_code=403)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(DIAL_COOKIE, self.token, httponly=True, samesite="strict", max_age=30 * 86400)
        return response

    async def csrf(self, request: Request) -> Response:
        return self._holder(request) or JSONResponse({"csrf": self.csrf_token})

    async def dial(self, request: Request) -> Response:
        refused = self._holder(request)
        if refused is not None:
            return refused
        if not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), self.csrf_token.encode()):
            return PlainTextResponse("403: missing or wrong CSRF token\n", status_code=403)
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return PlainTextResponse(f"403: origin {origin!r} is not this wallboard\n", status_code=403)
        try:
            body = await request.json() if await request.body() else {}
        except ValueError:
            return PlainTextResponse("400: the body is not JSON\n", status_code=400)
        desk = body.get("desk") if isinstance(body, dict) else None
        if desk is not None and not isinstance(desk, str):
            return PlainTextResponse("400: desk must be a string\n", status_code=400)
        try:
            task = await run_in_threadpool(self._dial, request.path_params["task_id"], desk or None)
        except ConfigError as error:
            return PlainTextResponse(f"409: {error}\n", status_code=409)
        except TransportError as error:
            return PlainTextResponse(f"502: {error}\n", status_code=502)
        return JSONResponse({"id": task["id"], "desk": task["desk"], "dial": task["dial_state"]})

    def _dial(self, task_id: int, desk: str | None) -> dict[str, Any]:
        from bridge.transport import Broker
        from consumers.callbacks.dial import dial_task
        from consumers.store.core import open_store

        url = options_of(self.settings).callback_dial_url or self.settings.amqp_url
        store = open_store(self.settings, "callbacks")
        try:
            with Broker(url, ca_file=self.settings.ca_file, sign=True) as broker:
                task, _ = dial_task(
                    self.settings, store, task_id, desk, broker=broker, requested_by="wallboard"
                )
        finally:
            store.close()
        return task
