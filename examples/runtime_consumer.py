"""A consumer in 20 lines on tcx-bridge's runtime: count ended inbound calls per desk.

The runtime gives it a durable queue (tcx.ended-count), acks after handling,
retries, dead-letters (tcx.dead.ended-count), reconnects and stops cleanly on SIGTERM.

    python examples/runtime_consumer.py
"""

import logging
from collections import Counter
from typing import ClassVar

from bridge.config import load_settings
from bridge.events import CALL_EVENT_DECODER
from consumers.runtime import Binding, Consumer, Runner


class EndedCalls(Consumer):
    name = "ended-count"
    seen: ClassVar[Counter[str]] = Counter()

    @classmethod
    def bindings(cls, settings):
        return [Binding(settings.exchange, "call.ended.inbound.*")]

    def decode(self, body, routing_key):
        return CALL_EVENT_DECODER.decode(body)

    def handle(self, event, context):
        self.seen[event.desk] += 1  # your side effect; make it idempotent on event.event_id
        return f"{self.seen[event.desk]} ended on {event.desk}"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the runtime logs a line per message
    logging.getLogger("pika").setLevel(logging.WARNING)
    settings = load_settings().settings
    runner = Runner(EndedCalls(), settings)
    runner.install_signal_handlers()
    runner.run()
