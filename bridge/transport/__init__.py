"""Everything that touches pika: connect, declare, publish with confirms, get, consume.

Every pika import lives in this package, one module a job: ``mapping`` turns
pika's exceptions into ours (:func:`mapped_errors`, the one place they are
caught; none escapes the package) and classifies them; ``connection`` connects
to the first node that answers; ``publish``, ``declare`` and ``consume`` are the
three things done on a connection. :class:`Broker` is all of them at once.
The envelopes (:class:`OutgoingMessage`, :class:`Delivery`) are pika-free, in
``bridge.envelope``.
"""

from __future__ import annotations

from bridge.envelope import Delivery, OutgoingMessage
from bridge.transport.connection import parameters
from bridge.transport.consume import UNREADABLE_HEADERS, Consuming
from bridge.transport.declare import Declaring
from bridge.transport.mapping import (
    ACCESS_REFUSED,
    NOT_FOUND,
    PRECONDITION_FAILED,
    mapped_errors,
    refused_for_good,
)
from bridge.transport.publish import Publishing

__all__ = [
    "ACCESS_REFUSED",
    "NOT_FOUND",
    "PRECONDITION_FAILED",
    "UNREADABLE_HEADERS",
    "Broker",
    "Delivery",
    "OutgoingMessage",
    "mapped_errors",
    "parameters",
    "refused_for_good",
]


class Broker(Publishing, Declaring, Consuming):
    """One connection with one channel in publisher-confirm mode, to the first broker node that answers.

    url may hold several comma-separated addresses (a cluster): connect() tries
    them in turn from position ``start``, each within ``connect_timeout`` seconds,
    with no pause between nodes; ``node`` and ``index`` say which one answered.
    As a context manager it connects on entry and closes on exit.
    """

    def __enter__(self) -> Broker:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
