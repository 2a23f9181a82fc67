"""How long to wait before connecting again: one backoff for every connection the runner keeps.

The broker and a PostgreSQL store both go away and come back; the runner waits
the same way for either. The delay doubles from ``base`` up to ``ceiling`` with
each failure in a row, and starts short again once a connection stayed up for
``healthy`` seconds (a new outage, not the old one going on).
"""

from __future__ import annotations

import time

RECONNECT_BASE = 0.5
RECONNECT_MAX = 30.0
HEALTHY_SECONDS = 30.0  # a connection up this long resets the reconnect delay


class Backoff:
    """Reconnect delays that grow while connections keep failing and reset after a healthy one."""

    def __init__(
        self, base: float = RECONNECT_BASE, ceiling: float = RECONNECT_MAX, healthy: float = HEALTHY_SECONDS
    ) -> None:
        self.base, self.ceiling, self.healthy = base, ceiling, healthy
        self.failures = 0  # in a row, since the last healthy connection
        self._since = time.monotonic()

    def attempt(self) -> None:
        """A connection is made now; how long it lasts tells a new outage from the same one."""
        self._since = time.monotonic()

    def delay(self, *, was_up: bool = True, at_once: bool = False) -> float:
        """Seconds to wait after the connection failed.

        was_up: False when it never came up (a failure to connect resets nothing);
        at_once: there is another way in (another node), tried without waiting at
        the first failure of an outage.
        """
        if was_up and time.monotonic() - self._since >= self.healthy:
            self.failures = 0  # a new outage: start again from the short delays
        if at_once and was_up and self.failures == 0:
            return 0.0
        delay = min(self.base * 2.0**self.failures, self.ceiling)
        self.failures += 1
        return delay
