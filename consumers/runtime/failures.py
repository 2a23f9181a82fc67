"""What becomes of a message that fails: its kind, its retry, its dead letter.

Everything about one delivery (headers, size, decoding, validation, handling)
runs inside its own error boundary (:func:`guarded`), and the outcome of a
failure depends only on its kind (:func:`classify`):

* permanent (oversize, undecodable, invalid values, HandlerError, any bug):
  dead-lettered at once, with the reason (:func:`dead_letter`);
* transient (the disk, an HTTP CRM, a store that is busy): retried with a
  growing delay up to ``max_attempts`` tries (:func:`retry`, :func:`attempts_of`),
  then dead-lettered (a quorum queue's redeliveries count as tries too);
* the connection to the broker, or to a PostgreSQL store, lost: the batch is
  rolled back and stays unacked; the runner reconnects and the broker
  redelivers it.

A retry is published by the consumer itself to its own retry exchange with the
original routing key, and the publisher's user_id and the tries in headers of
its own, which :func:`restore` believes only on a delivery through the again
exchange signed by the consumer's own user.

Dead-letter headers (for people; nothing reads them back): ``x-tcx-reason``,
``x-tcx-consumer``, ``x-tcx-attempts``, ``x-tcx-routing-key``, ``x-tcx-user-id``, and
``x-tcx-body-bytes`` on an oversize message, whose dead letter keeps only its first MAX_BODY bytes.
"""

from __future__ import annotations

import sqlite3
import time
import urllib.error
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from bridge.errors import HandlerError, StoreUnavailableError, TransientError, TransportError, UnroutableError
from bridge.events import MAX_BODY
from bridge.topology import dead_letter_key
from bridge.transport import UNREADABLE_HEADERS, Delivery, OutgoingMessage

ATTEMPTS = "x-tcx-attempts"
REASON = "x-tcx-reason"
ROUTING_KEY = "x-tcx-routing-key"
CONSUMER = "x-tcx-consumer"
USER_ID = "x-tcx-user-id"
SINCE = "x-tcx-since"  # on a retry: when it first failed (ms since the epoch), for retry windows
BODY_BYTES = "x-tcx-body-bytes"  # on a dead letter whose body was cut to MAX_BODY: its full size
RETRY_BASE_MS = 500
RETRY_MAX_MS = 30_000
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


def attempts_of(delivery: Delivery) -> int:
    """This delivery's try: our count on a retry (see :func:`restore`), or the broker's redeliveries."""
    retried = _count(delivery.headers.get(ATTEMPTS))
    redelivered = _count(delivery.headers.get("x-delivery-count"))  # quorum queues count for us
    return max(retried, redelivered) + 1


def restore(delivery: Delivery, *, again: str, username: str) -> Delivery:
    """A delivery as the consumer sees it: a retry as it was first delivered, headers no client wrote.

    A retry comes back through the consumer's again exchange, which no user may
    write to, from its retry queue, which only this consumer's own user may write
    to (checked: the broker vouches for user_id): its x-tcx-* headers are ours,
    and carry the publisher's user_id and the tries. On any other delivery those
    headers are a client's and are dropped.
    """
    if delivery.exchange == again:
        if delivery.user_id != username:
            return delivery._replace(user_id=None, headers={})  # not ours: vouched for by no one
        user = delivery.headers.get(USER_ID)
        return delivery._replace(
            user_id=user if isinstance(user, str) and user else None,
            headers={ATTEMPTS: delivery.headers.get(ATTEMPTS), SINCE: delivery.headers.get(SINCE)},
        )
    if ATTEMPTS in delivery.headers or USER_ID in delivery.headers or SINCE in delivery.headers:
        headers = {k: v for k, v in delivery.headers.items() if k not in (ATTEMPTS, USER_ID, SINCE)}
        return delivery._replace(headers=headers)
    return delivery


def retry(delivery: Delivery, attempts: int) -> tuple[int, OutgoingMessage]:
    """The delay (ms) and the copy of a delivery to publish to the consumer's retry exchange."""
    delay: int = min(RETRY_BASE_MS * 2 ** (attempts - 1), RETRY_MAX_MS)
    headers: dict[str, Any] = {ATTEMPTS: attempts, USER_ID: delivery.user_id or ""}  # only ours
    return delay, _copy(delivery, delivery.routing_key, headers, expiration_ms=delay)


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
    dead = _copy(delivery, dead_letter_key(consumer), headers)
    if len(dead.body) > MAX_BODY:  # kept for people to read: not every consumer's copy of 100 MB
        headers[BODY_BYTES] = len(dead.body)
        dead = dead._replace(body=dead.body[:MAX_BODY])
    return dead


def _copy(
    delivery: Delivery, routing_key: str, headers: dict[str, Any], expiration_ms: int | None = None
) -> OutgoingMessage:
    return OutgoingMessage(
        routing_key=routing_key,
        body=delivery.body,
        message_id=delivery.message_id or "",
        type=delivery.type or "",
        timestamp=delivery.timestamp or int(time.time()),
        expiration_ms=expiration_ms,
        headers=headers,
    )


def vouch(delivery: Delivery, exchanges: frozenset[str], *, trust_user_id: bool) -> None:
    """What the broker vouches for: the exchange it came through (one of exchanges), and a user_id when
    they are required (trust_user_id); HandlerError (dead-lettered, never retried) when it does not.

    A message whose headers could not be decoded (see bridge.transport) is dead-lettered too.
    """
    if delivery.exchange not in exchanges:
        raise HandlerError(
            f"spoofed: delivered through exchange {delivery.exchange!r}, not one this consumer is bound to"
        )
    unreadable = delivery.headers.get(UNREADABLE_HEADERS)
    if unreadable is not None:  # a table no client library can read: dead-lettered, never retried
        raise HandlerError(f"undecodable: the message's headers cannot be decoded ({unreadable})")
    if trust_user_id and not delivery.user_id:
        raise HandlerError(
            "spoofed: the message has no user_id, so the broker vouches for no sender "
            "(every tcx-bridge publisher sets it; trust_user_id = false accepts such messages)"
        )
