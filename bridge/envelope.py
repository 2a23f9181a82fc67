"""The AMQP envelope of a message, apart from pika: what we publish and what we receive.

The transport turns these into pika's properties and back (``bridge.transport``);
the outbox stores them; nothing here imports pika.
"""

from __future__ import annotations

from typing import Any, NamedTuple


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
