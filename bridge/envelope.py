"""The AMQP envelope of a message, apart from pika: what we publish and what we receive.

The transport turns these into pika's properties and back (``bridge.transport``);
the outbox stores them; nothing here imports pika. :func:`build_outgoing` is the
one way to make an OutgoingMessage of one of our wire messages.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import msgspec

from bridge import events


class OutgoingMessage(NamedTuple):
    """A message to publish; persistent, JSON."""

    routing_key: str
    body: bytes
    message_id: str
    type: str
    timestamp: int
    app_id: str = "tcx-bridge"
    expiration_ms: int | None = None
    headers: dict[str, Any] | None = None
    user_id: str | None = None  # the broker refuses it unless it is the connection's user


def build_outgoing(
    message: msgspec.Struct,
    *,
    routing_key: str,
    message_id: str,
    type: str,  # the AMQP property's name, as in OutgoingMessage
    app_id: str,
    expiration_ms: int | None = None,
) -> OutgoingMessage:
    """The message to publish for one of our wire messages: its JSON (the one encoder), stamped now."""
    return OutgoingMessage(
        routing_key=routing_key,
        body=events.ENCODER.encode(message),
        message_id=message_id,
        type=type,
        timestamp=int(time.time()),
        app_id=app_id,
        expiration_ms=expiration_ms,
    )


class Delivery(NamedTuple):
    """A message received from a queue."""

    body: bytes
    routing_key: str
    exchange: str
    delivery_tag: int
    redelivered: bool
    message_id: str | None
    type: str | None
    headers: dict[str, Any]
    timestamp: int | None = None
    expiration: str | None = None
    user_id: str | None = None  # validated by the broker: the user that published it (when set)
