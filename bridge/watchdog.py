"""The hard bound on one launch of the notify executable: past its deadline, outbox the event and exit."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from bridge.config import Settings
from bridge.envelope import OutgoingMessage
from bridge.errors import TcxBridgeError
from bridge.notify_log import log_lost

logger = logging.getLogger("bridge.notify")

WATCHDOG_GRACE = 2.0  # seconds past publish_budget for closing, replaying and logging


class Watchdog:
    """A hard bound on one launch: pika has no overall deadline for a confirm.

    If the launch is still running publish_budget + WATCHDOG_GRACE seconds after it
    began (a broker that accepted the connection and then went silent), the event
    goes to the outbox, unless it was already confirmed or stored, and the process
    exits (with exit_code, or lost_code when the event could not be stored either).
    The Assistant never waits on a hung process.
    """

    def __init__(
        self, seconds: float, message: OutgoingMessage, settings: Settings, exit_code: int, *, lost_code: int
    ) -> None:
        self._message, self._settings, self._exit_code = message, settings, exit_code
        self._lost_code = lost_code
        self._lock = threading.Lock()
        self._safe = self._finished = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._seconds = seconds

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._finished = True
        self._timer.cancel()

    @property
    def safe(self) -> bool:
        with self._lock:
            return self._safe

    def mark_safe(self) -> None:
        """The event is confirmed or stored: past the deadline, only exit."""
        with self._lock:
            self._safe = True

    def keep(self, store: Callable[[], object]) -> None:
        """Store the event once: not again if the deadline stored it already (nor the deadline after us)."""
        with self._lock:
            if not self._safe:
                store()
                self._safe = True

    def _fire(self) -> None:
        with self._lock:
            if self._finished:
                return
            if self._safe:
                logger.warning("stopped at the %.1fs deadline; the rest of the outbox waits", self._seconds)
            else:
                try:
                    from bridge.outbox import Outbox  # only past the deadline

                    Outbox(self._settings.outbox_dir).put(self._message)
                except TcxBridgeError as error:
                    log_lost(self._message, error)
                    self._exit_code = self._lost_code
                else:
                    logger.warning(
                        "outboxed %s event_id=%s: the broker did not confirm within %.1fs",
                        self._message.routing_key,
                        self._message.message_id,
                        self._seconds,
                        extra={"outcome": True},
                    )
            logging.shutdown()
            os._exit(self._exit_code)
