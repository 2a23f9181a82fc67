"""The consume loop's decisions without a broker: failure kinds, attempt counting, reconnect delays."""

from __future__ import annotations

import sqlite3
import urllib.error
from typing import Any

import msgspec
import pytest

from bridge.config import Settings
from bridge.errors import (
    BrokerRefusedError,
    BrokerUnreachableError,
    HandlerError,
    OutboxError,
    TransientError,
)
from bridge.transport import Delivery
from consumers.runtime import runner as runtime
from consumers.runtime.consumer import Consumer
from consumers.runtime.failures import attempts_of, classify
from consumers.runtime.runner import Runner


def http_error(code: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("http://crm", code, "x", {}, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (msgspec.ValidationError("bad"), "permanent"),
        (HandlerError("no"), "permanent"),
        (ValueError("a bug or bad data"), "permanent"),
        (KeyError("x"), "permanent"),
        (http_error(400), "permanent"),  # the CRM says our request is wrong: retrying cannot help
        (http_error(503), "transient"),
        (http_error(429), "transient"),
        (urllib.error.URLError("refused"), "transient"),
        (TimeoutError(), "transient"),
        (OSError(28, "No space left on device"), "transient"),  # the disk
        (sqlite3.OperationalError("database is locked"), "transient"),
        (TransientError("CRM away"), "transient"),
        (OutboxError("x"), "permanent"),
    ],
)
def test_failures_are_classified_by_kind(error: Exception, kind: str) -> None:
    assert classify(error)[0] == kind


def delivery(**headers: Any) -> Delivery:
    return Delivery(b"{}", "call.started.inbound.d", "tcx.events", 1, False, "m", "call", headers)


@pytest.mark.parametrize(
    ("headers", "attempts"),
    [
        ({}, 1),
        ({"x-tcx-attempts": 2}, 3),  # our own count, on a retry restored by the runner
        ({"x-delivery-count": 4}, 5),  # quorum queues count redeliveries for us
        ({"x-tcx-attempts": "abc"}, 1),
        ({"x-tcx-attempts": [1, 2]}, 1),
        ({"x-tcx-attempts": 2**62}, 1),  # not a count of ours
        ({"x-tcx-attempts": -3}, 1),
        ({"x-tcx-attempts": True}, 1),
        ({"x-tcx-attempts": b"2"}, 1),
        ({"x-death": [{"queue": "tcx.crm", "reason": "rejected", "count": 9}]}, 1),  # a client's: nothing
    ],
)
def test_attempts_header_of_any_type_never_crashes(headers: dict[str, Any], attempts: int) -> None:
    assert attempts_of(delivery(**headers)) == attempts


class Idle(Consumer):
    name = "idle"


def test_reconnect_delays_start_short_again_after_a_healthy_connection(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    clock = [0.0]
    monkeypatch.setattr(runtime.time, "monotonic", lambda: clock[0])
    # connect fails 4 times, then stays up 60 s, then fails twice, then an operator error ends it
    script = ["fail"] * 4 + ["healthy"] + ["fail"] * 2 + ["refused"]
    delays: list[float] = []

    class Scripted(Runner):
        def _run_once(self) -> None:
            step = script.pop(0)
            if step == "refused":
                raise BrokerRefusedError("login refused")
            if step == "healthy":
                self._connected = True
                clock[0] += 60
                raise BrokerUnreachableError("node went away")
            self._connected = False
            raise BrokerUnreachableError("refused")

        def _sleep(self, seconds: float) -> None:
            delays.append(seconds)
            clock[0] += seconds

    with pytest.raises(BrokerRefusedError):
        Scripted(Idle(), settings).run()
    assert delays == [0.5, 1.0, 2.0, 4.0, 0.5, 1.0, 2.0]
