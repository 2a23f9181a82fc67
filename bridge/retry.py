"""The one retry helper: call again on a transient failure, with exponential backoff, within bounds.

tenacity does the work; it is imported only when a call is retried, so the lean
notify path (which retries only after a first publish failed) never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def call_with_retries(
    call: Callable[[int], T],
    *,
    when: Callable[[BaseException], bool],
    first_wait: float,
    max_wait: float,
    attempts: int | None = None,
    within: float | None = None,
) -> T:
    """Return call(attempt number, from 1), calling it again while it raises an error ``when`` accepts.

    The waits double from first_wait up to max_wait. It stops after ``attempts`` calls
    and before a wait would end past ``within`` seconds from the start (either or both);
    then the last error propagates, as does at once one that ``when`` refuses.
    """
    import tenacity  # only when a call may be retried: see the module docstring

    stops: list[tenacity.stop.stop_base] = []
    if attempts is not None:
        stops.append(tenacity.stop_after_attempt(attempts))
    if within is not None:
        stops.append(tenacity.stop_before_delay(within))
    if not stops:
        raise ValueError("give attempts or within: a retry needs a bound")
    for attempt in tenacity.Retrying(
        stop=tenacity.stop_any(*stops),
        wait=tenacity.wait_exponential(multiplier=first_wait, max=max_wait),
        retry=tenacity.retry_if_exception(when),
        reraise=True,
    ):
        with attempt:
            return call(attempt.retry_state.attempt_number)
    raise AssertionError("unreachable: with reraise, tenacity raises the last error when it stops")
