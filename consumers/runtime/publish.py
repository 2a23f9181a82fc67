"""A handler's publish (``Context.publish``): a message the broker returns as unroutable is kept, not lost.

A pop for a desk with no agent running is an outcome, not a failure: the
message goes to the unrouted exchange instead, with the exchange it was meant
for in ``x-tcx-unrouted-exchange``, and one log line per destination an hour.
"""

from __future__ import annotations

import logging
import time

from bridge.config import Settings
from bridge.errors import UnroutableError
from bridge.transport import Broker, OutgoingMessage
from consumers.runtime.failures import CONSUMER

logger = logging.getLogger(__name__)

UNROUTED_LOG_SECONDS = 3600.0  # one log line per unroutable destination per hour


class Publisher:
    """Publishes for one consumer's handlers; remembers when it last logged each unroutable destination."""

    def __init__(self, settings: Settings, consumer: str) -> None:
        self.settings = settings
        self.consumer = consumer
        self._logged: dict[str, float] = {}

    def publish(self, broker: Broker, exchange: str, message: OutgoingMessage) -> bool:
        """Publish; False when the broker returned it and it went to the unrouted exchange."""
        try:
            broker.publish(exchange, message)
        except UnroutableError:
            pass
        else:
            return True
        headers = {
            **(message.headers or {}),
            "x-tcx-unrouted-exchange": exchange,
            CONSUMER: self.consumer,
        }
        broker.publish(self.settings.unrouted_exchange, message._replace(headers=headers), mandatory=False)
        destination = f"{exchange}/{message.routing_key}"
        now = time.monotonic()
        if now - self._logged.get(destination, -UNROUTED_LOG_SECONDS) >= UNROUTED_LOG_SECONDS:
            self._logged[destination] = now
            logger.warning(
                "consumer=%s nobody listens for %s on %r (is that desk's agent running?); "
                "kept in %r; logged once an hour",
                self.consumer,
                message.routing_key,
                exchange,
                self.settings.unrouted_exchange,
            )
        return False
