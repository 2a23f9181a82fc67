"""How hard to try a target: the retry delays, the pause after failures, the order of a call's events.

* :func:`retry_delay`: exponential from ``retry_base`` up to ``retry_max``, each with
  jitter (a uniform draw between half and all of it), or the target's Retry-After
  (capped at ``retry_max``); a message whose first failure was ``retry_for``
  seconds ago is dead-lettered instead, with the last status.
* :class:`Breaker`: ``disable_after`` transient failures in a row, all within
  ``failure_window`` seconds, pause the target until ``resume_after`` seconds
  passed or ``tcx-bridge webhooks enable NAME``; a delivery resets the count.
* :class:`Order`: while an event of a call waits in the retry queue, the call's
  later events queue up behind it (the retry queue is first in, first out), so a
  receiver sees a call's events in the order they happened.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque

from consumers.webhooks.settings import Target


def retry_delay(target: Target, attempts: int, asked: float | None, draw: float | None = None) -> float:
    """Seconds before the next try after the attempts-th failed; asked: the target's Retry-After."""
    if asked is not None:
        return min(max(asked, 0.0), target.retry_max)
    ceiling = min(target.retry_base * 2.0 ** max(attempts - 1, 0), target.retry_max)
    return ceiling * (0.5 + 0.5 * (random.random() if draw is None else draw))  # jitter, not a secret


class Breaker:
    """A target's failures in a row and whether it is paused (thread-safe)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._failures: deque[float] = deque()
        self.paused_until: float | None = None  # time.monotonic() when it resumes by itself
        self.pauses = 0
        self._lock = threading.Lock()

    @property
    def paused(self) -> bool:
        with self._lock:
            if self.paused_until is not None and time.monotonic() >= self.paused_until:
                self._resume()
            return self.paused_until is not None

    def _resume(self) -> None:
        self.paused_until = None
        self._failures.clear()

    def resume(self) -> None:
        """Resume now (``webhooks enable``)."""
        with self._lock:
            self._resume()

    def succeeded(self) -> None:
        with self._lock:
            self._failures.clear()

    def failed(self) -> bool:
        """Count a transient failure; True when it pauses the target now."""
        now = time.monotonic()
        with self._lock:
            if self.paused_until is not None:
                return False
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.target.failure_window:
                self._failures.popleft()
            if len(self._failures) < self.target.disable_after:
                return False
            self.paused_until = now + self.target.resume_after
            self.pauses += 1
            return True


class Order:
    """The events of each call waiting in the retry queue, oldest first (in memory, thread-safe)."""

    def __init__(self) -> None:
        self._waiting: dict[str, deque[str]] = {}
        self._lock = threading.Lock()

    def may_try(self, call: str, event: str) -> bool:
        """Whether event may be tried now: no earlier event of its call waits (else it queues up behind)."""
        with self._lock:
            waiting = self._waiting.get(call)
            if not waiting or waiting[0] == event:
                return True
            if event not in waiting:
                waiting.append(event)
            return False

    def waits(self, call: str, event: str) -> None:
        """event went to the retry queue."""
        with self._lock:
            waiting = self._waiting.setdefault(call, deque())
            if event not in waiting:
                waiting.append(event)

    def done(self, call: str, event: str) -> None:
        """event was delivered or dead-lettered: the next of its call may go."""
        with self._lock:
            waiting = self._waiting.get(call)
            if waiting is None:
                return
            try:
                waiting.remove(event)
            except ValueError:
                pass
            if not waiting:
                del self._waiting[call]
