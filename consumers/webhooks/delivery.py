"""One HTTP request to a target, and what its answer means: the webhooks' one boundary to httpx.

Every outcome of a request becomes a :class:`Result` here and nowhere else:

    2xx                                    delivered
    408, 429, 5xx, a network error/timeout  retry (429 and 503: after Retry-After, seconds or a date)
    any other status (3xx, 4xx)            dead: the target says this request will never do
    an address the SSRF guard refuses      dead
"""

from __future__ import annotations

import email.utils
import importlib.util
import time
from typing import Literal, NamedTuple

import httpx

from bridge.errors import ConfigError
from consumers.webhooks.guard import Guard, RefusedAddressError
from consumers.webhooks.settings import Target

# skipped: the format has nothing to send; held: not tried (paused); queued: behind its call's retry
Verdict = Literal["delivered", "retry", "dead", "skipped", "held", "queued"]
USER_AGENT = "tcx-bridge-webhooks/1"


class Result(NamedTuple):
    """What became of one attempt (or why none was made: skipped, held)."""

    verdict: Verdict
    status: int | None = None  # the HTTP status, None for a network error or no attempt
    reason: str = ""
    retry_after: float | None = None  # seconds the target asked to wait (429/503)
    seconds: float = 0.0  # the request's duration

    @property
    def status_class(self) -> str:
        """2xx, 3xx, 4xx, 5xx or network: the metrics' label."""
        return f"{self.status // 100}xx" if self.status else "network"


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def verdict_of(status: int) -> Verdict:
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "dead"


class Sender:
    """Posts to one target over a pool of kept-alive connections (``concurrency`` at most)."""

    def __init__(self, target: Target, *, guard: Guard | None = None) -> None:
        self.target = target
        self.guard = guard or Guard(target.name, target.url, target.allow_private)
        if target.http2 and importlib.util.find_spec("h2") is None:  # httpx's HTTP/2 needs it
            raise ConfigError(
                f"webhook {target.name!r}: http2 = true needs the h2 package: pip install 'httpx[http2]'"
            )
        limits = httpx.Limits(
            max_connections=target.concurrency, max_keepalive_connections=target.concurrency
        )
        self.client = httpx.Client(
            timeout=httpx.Timeout(target.timeout),
            limits=limits,
            headers={"user-agent": USER_AGENT, **target.headers},
            follow_redirects=False,  # a redirect is the target's misconfiguration, and could lead anywhere
            trust_env=False,  # no proxy from the environment unless asked: the guard checks the real host
            http2=target.http2,
        )

    def post(self, body: bytes, headers: dict[str, str]) -> Result:
        """One attempt; never raises for anything the network or the target does."""
        try:
            self.guard.check()
        except RefusedAddressError as error:
            return Result("dead", None, str(error))
        except ConfigError as error:  # the name does not resolve now: the network, maybe for a while
            return Result("retry", None, str(error))
        started = time.perf_counter()
        try:
            response = self.client.post(self.target.url, content=body, headers=headers)
        except httpx.TransportError as error:  # connect, read, write, pool timeouts, refused, reset
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            return Result("retry", None, reason, seconds=time.perf_counter() - started)
        seconds = time.perf_counter() - started
        status = response.status_code
        verdict = verdict_of(status)
        after = retry_after(response.headers.get("retry-after")) if status in (429, 503) else None
        reason = "" if verdict == "delivered" else f"HTTP {status} {response.reason_phrase}".strip()
        return Result(verdict, status, reason, after, seconds)

    def close(self) -> None:
        self.client.close()
