"""One reconnect backoff for the broker and the store: doubling, capped, reset after a healthy connection."""

from __future__ import annotations

import pytest

from consumers.runtime import backoff as module
from consumers.runtime.backoff import Backoff


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [0.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    return now


def test_delays_double_up_to_the_ceiling(clock: list[float]) -> None:
    backoff = Backoff(base=0.5, ceiling=3.0, healthy=30.0)
    delays = []
    for _ in range(5):
        backoff.attempt()
        delays.append(backoff.delay())
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_healthy_connection_starts_the_delays_short_again(clock: list[float]) -> None:
    backoff = Backoff()
    assert [backoff.delay(), backoff.delay()] == [0.5, 1.0]
    backoff.attempt()
    clock[0] += 30.0  # up long enough: the next failure is a new outage
    assert backoff.delay() == 0.5


def test_a_connection_that_never_came_up_resets_nothing(clock: list[float]) -> None:
    backoff = Backoff()
    assert backoff.delay() == 0.5
    backoff.attempt()
    clock[0] += 60.0  # a slow failure to connect is the same outage
    assert backoff.delay(was_up=False) == 1.0


def test_another_node_is_tried_at_once_only_first_in_an_outage(clock: list[float]) -> None:
    backoff = Backoff()
    backoff.attempt()
    clock[0] += 60.0
    assert backoff.delay(at_once=True) == 0.0  # the node went away: the others at once
    backoff.attempt()
    assert backoff.delay(was_up=False, at_once=True) == 0.5  # no node answered: wait
    backoff.attempt()
    assert backoff.delay(at_once=True) == 1.0  # up again but briefly: the same outage
