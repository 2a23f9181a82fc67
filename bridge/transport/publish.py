"""Publishing with publisher confirms: one message at a time, or a batch pipelined."""

from __future__ import annotations

import time
from typing import Any

import pika
import pika.exceptions

from bridge.envelope import OutgoingMessage
from bridge.errors import BrokerUnreachableError, PublishNackedError, TransportError
from bridge.transport.connection import Connection
from bridge.transport.mapping import mapped_errors


class Publishing(Connection):
    """publish (one message, its confirm awaited) and publish_many (many, their confirms at once)."""

    def publish(self, exchange: str, message: OutgoingMessage, *, mandatory: bool = True) -> None:
        """Publish and wait for the confirm; raise PublishError unless the broker took it."""
        properties = _properties(self._signed(message))
        with mapped_errors(f"publish {message.routing_key} to {exchange!r}"):
            self.channel.basic_publish(exchange, message.routing_key, message.body, properties, mandatory)

    def publish_many(
        self, exchange: str, messages: list[OutgoingMessage], *, timeout: float = 30.0
    ) -> tuple[int, TransportError | None]:
        """Publish every message, then wait for all their confirms at once (pipelined).

        Returns how many messages, from the first, the broker confirmed, and the error
        that stopped the rest (a nack, a return, the connection gone), or None.
        """
        if self._connection is None or not self._connection.is_open:
            return 0, BrokerUnreachableError("the connection to the broker is closed")
        confirms = _Confirms(len(messages))
        action = f"publish {len(messages)} message(s) to {exchange!r}"
        try:
            with mapped_errors(action):
                self._pipeline(self._connection, exchange, messages, confirms, timeout)
        except TransportError as error:
            return confirms.prefix(), error
        prefix = confirms.prefix()
        if prefix == len(messages):
            return prefix, None
        if confirms.failed <= len(messages):
            return prefix, PublishNackedError(f"{action}: the broker refused message {confirms.failed}")
        return prefix, BrokerUnreachableError(f"{action}: no confirm within {timeout:g}s")

    def _pipeline(
        self,
        connection: pika.BlockingConnection,
        exchange: str,
        messages: list[OutgoingMessage],
        confirms: _Confirms,
        timeout: float,
    ) -> None:
        """On a channel of its own, publish every message, then wait until confirms has them all."""
        channel = connection.channel()  # its own channel: confirms handled here, in bulk
        impl = channel._impl  # pika's async channel: many publishes, then their confirms
        selected: list[bool] = []
        impl.confirm_delivery(ack_nack_callback=confirms.on_confirm, callback=lambda _: selected.append(True))
        impl.add_on_return_callback(confirms.on_return)
        closed: list[Any] = []
        impl.add_on_close_callback(lambda _channel, reason: closed.append(reason))
        deadline = time.monotonic() + timeout
        while not selected and impl.is_open and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.002)
        for tag, message in enumerate(messages, start=1):
            confirms.tags[message.message_id] = tag
            impl.basic_publish(
                exchange,
                message.routing_key,
                message.body,
                _properties(self._signed(message)),
                mandatory=True,
            )
        while impl.is_open and time.monotonic() < deadline and not confirms.settled():
            connection.process_data_events(time_limit=0.002)
        if impl.is_open:
            channel.close()
        elif closed and isinstance(closed[0], pika.exceptions.ChannelClosedByBroker):
            raise closed[0]  # e.g. 404: the exchange is missing (mapped to our error by the caller)


class _Confirms:
    """The broker's answers to a pipelined batch: acks (one or up to a tag), nacks and returns.

    Tags count from 1, in publish order; ``failed`` is the first tag refused (total + 1: none).
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.acked_upto = 0  # every tag up to this one is acked (a multiple ack)
        self.acked: set[int] = set()  # tags acked one by one
        self.failed = total + 1
        self.tags: dict[str, int] = {}  # message_id -> tag, to place a returned message

    def on_confirm(self, frame: Any) -> None:
        method = frame.method
        upto = method.delivery_tag if method.delivery_tag else self.total
        if isinstance(method, pika.spec.Basic.Nack):
            first = self.acked_upto + 1 if method.multiple else method.delivery_tag
            self.failed = min(self.failed, max(first, 1) if upto else first)
        else:
            self.acked_upto = max(self.acked_upto, upto) if method.multiple else self.acked_upto
            self.acked.add(method.delivery_tag)

    def on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        self.failed = min(self.failed, self.tags.get(properties.message_id, 1))

    def confirmed(self) -> int:
        """How many messages from the first are confirmed."""
        prefix = self.acked_upto
        while prefix < self.total and (prefix + 1) in self.acked:
            prefix += 1
        return prefix

    def prefix(self) -> int:
        """How many messages from the first are confirmed, none of them at or past a refused one."""
        return min(self.confirmed(), self.failed - 1)

    def settled(self) -> bool:
        """Every message confirmed, or every one before the first refused one."""
        if self.confirmed() == self.total:
            return True
        return self.failed <= self.total and all(
            tag in self.acked or tag <= self.acked_upto for tag in range(1, self.failed)
        )


def _properties(message: OutgoingMessage) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        expiration=None if message.expiration_ms is None else str(message.expiration_ms),
        headers=message.headers,
        user_id=message.user_id,
    )
