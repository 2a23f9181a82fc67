"""The one retry helper: backoff within a bound of attempts or of time; the last error propagates."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from bridge.errors import BrokerUnreachableError, HandlerError, TransportError
from bridge.retry import call_with_retries


def flaky(failures: int, error: Exception) -> tuple[list[int], Callable[[int], int]]:
    """A call that raises error its first `failures` times, then returns its attempt number."""
    seen: list[int] = []

    def call(attempt: int) -> int:
        seen.append(attempt)
        if len(seen) <= failures:
            raise error
        return attempt

    return seen, call


def transient(error: BaseException) -> bool:
    return isinstance(error, TransportError)


def test_a_call_that_recovers_returns_and_sees_its_attempt_numbers() -> None:
    seen, call = flaky(2, BrokerUnreachableError("away"))
    assert call_with_retries(call, when=transient, first_wait=0.001, max_wait=0.002, attempts=3) == 3
    assert seen == [1, 2, 3]


def test_after_the_last_attempt_the_last_error_propagates() -> None:
    seen, call = flaky(5, BrokerUnreachableError("still away"))
    with pytest.raises(BrokerUnreachableError, match="still away"):
        call_with_retries(call, when=transient, first_wait=0.001, max_wait=0.002, attempts=3)
    assert seen == [1, 2, 3]


def test_an_error_when_refuses_propagates_at_once() -> None:
    seen, call = flaky(5, HandlerError("for good"))
    with pytest.raises(HandlerError, match="for good"):
        call_with_retries(call, when=transient, first_wait=0.001, max_wait=0.002, attempts=3)
    assert seen == [1]


def test_within_stops_before_a_wait_that_would_end_past_it() -> None:
    """The first wait (0.5 s) would end past the 0.1 s budget: one call, no sleep."""
    seen, call = flaky(5, BrokerUnreachableError("away"))
    started = time.monotonic()
    with pytest.raises(BrokerUnreachableError):
        call_with_retries(call, when=transient, first_wait=0.5, max_wait=1.0, within=0.1)
    assert seen == [1]
    assert time.monotonic() - started < 0.4


def test_within_retries_while_there_is_time() -> None:
    seen, call = flaky(2, BrokerUnreachableError("away"))
    assert call_with_retries(call, when=transient, first_wait=0.001, max_wait=0.002, within=5.0) == 3
    assert seen == [1, 2, 3]


def test_a_retry_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="give attempts or within"):
        call_with_retries(lambda attempt: attempt, when=transient, first_wait=0.1, max_wait=1.0)
