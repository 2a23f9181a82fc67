"""Publishing with publisher confirms: one message at a time, or a batch pipelined."""

from __future__ import annotations

import collections
import contextlib
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
        that stopped the rest (a nack, a return, the connection gone), or None. The
        confirm-mode channel is kept for the next batch while every batch is confirmed
        in full (nothing is then outstanding on it); any failure closes it.
        """
        if self._connection is None or not self._connection.is_open:
            return 0, BrokerUnreachableError("the connection to the broker is closed")
        action = f"publish {len(messages)} message(s) to {exchange!r}"
        deadline = time.monotonic() + timeout
        confirms = _Confirms(len(messages))
        try:
            with mapped_errors(action):
                pipe = self._pipe
                if pipe is None or pipe.connection is not self._connection or not pipe.impl.is_open:
                    self._drop_pipe()
                    pipe = self._pipe = _Pipe(self._connection, deadline)
                confirms.offset = pipe.published
                properties = [_properties(self._signed(message)) for message in messages]
                pipe.pipeline(exchange, properties, messages, confirms, deadline)
        except TransportError as error:
            self._drop_pipe()
            return confirms.prefix(), error
        prefix = confirms.prefix()
        if prefix == len(messages):
            return prefix, None
        self._drop_pipe()  # confirms may still come for this batch: the next one gets a channel of its own
        if confirms.failed <= len(messages):
            return prefix, PublishNackedError(f"{action}: the broker refused message {confirms.failed}")
        return prefix, BrokerUnreachableError(f"{action}: no confirm within {timeout:g}s")

    _pipe: _Pipe | None = None  # the confirm-mode channel publish_many keeps between batches

    def _drop_pipe(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.close()


class _Pipe:
    """A channel of its own in confirm mode, for pipelined batches: confirms handled here, in bulk.

    Delivery tags go on counting across batches; ``published`` is the last one used.
    """

    def __init__(self, connection: pika.BlockingConnection, deadline: float) -> None:
        self.connection = connection
        self.channel = connection.channel()
        self.impl = self.channel._impl  # pika's async channel: many publishes, then their confirms
        self.published = 0
        self.confirms: _Confirms | None = None
        self.closed: list[Any] = []
        selected: list[bool] = []
        self.impl.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _: selected.append(True)
        )
        self.impl.add_on_return_callback(self._on_return)
        self.impl.add_on_close_callback(lambda _channel, reason: self.closed.append(reason))
        while not selected and self.impl.is_open and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.002)
        self._raise_if_closed()

    def _on_confirm(self, frame: Any) -> None:
        if self.confirms is not None:
            self.confirms.on_confirm(frame)

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        if self.confirms is not None:
            self.confirms.on_return(channel, method, properties, body)

    def pipeline(
        self,
        exchange: str,
        properties: list[pika.BasicProperties],
        messages: list[OutgoingMessage],
        confirms: _Confirms,
        deadline: float,
    ) -> None:
        """Publish every message, then wait until confirms has them all (or the first refused one)."""
        self.confirms = confirms
        publish, tags = self.impl.basic_publish, confirms.tags
        for tag, (message, props) in enumerate(zip(messages, properties, strict=True), start=1):
            tags[message.message_id] = tag
            publish(exchange, message.routing_key, message.body, props, mandatory=True)
        self.published += len(messages)
        _coalesce(self.connection)
        while self.impl.is_open and time.monotonic() < deadline and not confirms.settled():
            self.connection.process_data_events(time_limit=0.002)
        self._raise_if_closed()

    def _raise_if_closed(self) -> None:
        if (
            not self.impl.is_open
            and self.closed
            and isinstance(self.closed[0], pika.exceptions.ChannelClosedByBroker)
        ):
            raise self.closed[0]  # e.g. 404: the exchange is missing (mapped to our error by the caller)

    def close(self) -> None:
        self.confirms = None
        if self.impl.is_open and self.connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):  # closing is best effort
                self.channel.close()


class _Confirms:
    """The broker's answers to a pipelined batch: acks (one or up to a tag), nacks and returns.

    Tags count from 1, in publish order; ``failed`` is the first tag refused (total + 1: none).
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.offset = 0  # delivery tags before this batch's first, on a channel kept for batches (set then)
        self.acked_upto = 0  # every tag up to this one is acked (a multiple ack)
        self.acked: set[int] = set()  # tags acked one by one
        self.failed = total + 1
        self.tags: dict[str, int] = {}  # message_id -> tag, to place a returned message

    def on_confirm(self, frame: Any) -> None:
        method = frame.method
        if method.delivery_tag and method.delivery_tag <= self.offset:
            return  # a batch before this one's: settled in full, so this cannot be (ignored all the same)
        tag = method.delivery_tag - self.offset if method.delivery_tag else 0
        upto = tag if tag else self.total
        if isinstance(method, pika.spec.Basic.Nack):
            first = self.acked_upto + 1 if method.multiple else tag
            self.failed = min(self.failed, max(first, 1) if upto else first)
        else:
            self.acked_upto = max(self.acked_upto, upto) if method.multiple else self.acked_upto
            self.acked.add(tag)

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


def _coalesce(connection: pika.BlockingConnection) -> None:
    """Join the frames pika buffered for a batch into one write: one send() where pika makes three a message.

    pika queues each frame (method, header, body) as a buffer of its own and sends them one
    send() each when the connection next runs; for a batch that is most of its CPU. The bytes
    and their order are the same. Left as it is where pika's buffers are not where we expect.
    """
    transport = getattr(getattr(connection, "_impl", None), "_transport", None)
    buffers = getattr(transport, "_tx_buffers", None)
    if isinstance(buffers, collections.deque) and len(buffers) > 1:
        joined = b"".join(buffers)
        buffers.clear()
        buffers.append(joined)


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
