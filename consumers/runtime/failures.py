"""What becomes of a message that fails: its kind, its attempt number, its dead letter.

Everything about one delivery (headers, size, decoding, validation, handling)
runs inside its own error boundary (:func:`guarded`), and the outcome of a failure depends only
on its kind (:func:`classify`):

* permanent (oversize, undecodable, invalid values, HandlerError, any bug):
  dead-lettered at once, with the reason;
* transient (the disk, an HTTP CRM, a store that is busy): rejected, so the
  broker retries it after RETRY_DELAY_MS, up to ``max_attempts`` deliveries
  (counted by the broker's ``x-death``: :func:`attempts_of`), then dead-lettered;
* the connection to the broker, or to a PostgreSQL store, lost: the batch is
  rolled back and stays unacked; the runner reconnects and the broker
  redelivers it.

Dead-letter headers (for people; nothing reads them back): ``x-tcx-reason``,
``x-tcx-consumer``, ``x-tcx-attempts``, ``x-tcx-routing-key``, ``x-tcx-user-id``.
"""

from __future__ import annotations

import sqlite3
import time
import urllib.error
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from bridge.errors import HandlerError, StoreUnavailableError, TransientError, TransportError, UnroutableError
from bridge.topology import dead_letter_key
from bridge.transport import Delivery, OutgoingMessage

ATTEMPTS = "x-tcx-attempts"
REASON = "x-tcx-reason"
ROUTING_KEY = "x-tcx-routing-key"
CONSUMER = "x-tcx-consumer"
USER_ID = "x-tcx-user-id"
RETRIED_BY_BROKER = ("rejected", "delivery_limit")  # x-death reasons of our own retries
MAX_ATTEMPTS_HEADER = 1000  # an x-tcx-attempts above this is not ours: counted as attempt 1
T = TypeVar("T")


def guarded(work: Callable[[], T]) -> tuple[T | None, Exception | None]:
    """One delivery's work inside its error boundary: (result, None), or (None, the error to classify).

    Only a lost connection (the broker's or the store's) escapes: the batch then
    stays unacked and comes back.
    """
    try:
        return work(), None
    except StoreUnavailableError:
        raise  # the database is gone: the batch stays unacked and comes back
    except TransportError as error:
        if isinstance(error, UnroutableError):  # our own dead-letter publish came back
            return None, error
        raise  # the connection is gone: the batch stays unacked and comes back
    except Exception as error:  # noqa: BLE001  # classified by the caller: dead-letter or retry
        return None, error


def classify(error: BaseException) -> tuple[str, str]:
    """("permanent" | "transient", the reason for the headers and the log)."""
    if isinstance(error, (msgspec.DecodeError, msgspec.ValidationError)):
        return "permanent", f"undecodable: {error}"
    if isinstance(error, HandlerError):
        return "permanent", str(error)
    reason = f"{type(error).__name__}: {error}"
    if isinstance(error, urllib.error.HTTPError):  # an answer: only a busy or failing server is transient
        return ("transient" if error.code >= 500 or error.code == 429 else "permanent"), reason
    if isinstance(error, (TransientError, TransportError, OSError, sqlite3.OperationalError)):
        return "transient", reason  # the disk, the network, a CRM or a store away for now
    return "permanent", reason


def _count(value: object) -> int:
    """A retry counter from a header: a small non-negative integer, else 0 (not ours to trust)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ATTEMPTS_HEADER:
        return 0
    return value


def attempts_of(delivery: Delivery, queue: str) -> int:
    """This delivery's attempt number, as the broker counts: its retries of queue and its redeliveries."""
    retried = 0
    deaths = delivery.headers.get("x-death")
    for death in deaths if isinstance(deaths, list) else ():
        ours = isinstance(death, dict) and death.get("queue") == queue
        if ours and death.get("reason") in RETRIED_BY_BROKER:
            retried += _count(death.get("count"))
    redelivered = _count(delivery.headers.get("x-delivery-count"))  # quorum queues count for us
    return max(retried, redelivered) + 1


def dead_letter(delivery: Delivery, consumer: str, attempts: int, reason: str) -> OutgoingMessage:
    """The dead letter of a delivery for the dead exchange: its body and ids, the reason in headers."""
    headers: dict[str, Any] = {
        **delivery.headers,
        ATTEMPTS: attempts,
        ROUTING_KEY: delivery.routing_key,
        REASON: reason[:1000],
        CONSUMER: consumer,
    }
    if delivery.user_id:
        headers[USER_ID] = delivery.user_id
    return OutgoingMessage(
        routing_key=dead_letter_key(consumer),
        body=delivery.body,
        message_id=delivery.message_id or "",
        type=delivery.type or "",
        timestamp=delivery.timestamp or int(time.time()),
        headers=headers,
    )
