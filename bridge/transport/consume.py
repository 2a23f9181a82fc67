"""Receiving: get one message, follow a queue (or a stream), consume in batches, ack and reject."""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pika.data

from bridge.envelope import Delivery
from bridge.errors import BrokerUnreachableError
from bridge.transport.connection import Connection
from bridge.transport.mapping import mapped_errors

UNREADABLE_HEADERS = "x-tcx-unreadable-headers"  # set instead of headers pika cannot decode
_decode_table = pika.data.decode_table


def _tolerant_decode_table(encoded: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """pika's field-table decoder, but a table it cannot decode is skipped, not fatal.

    RabbitMQ relays headers pika fails on (a timestamp past the year 9999, arrays
    nested beyond the recursion limit); pika then drops the whole connection, the broker
    redelivers the message, and the consumer of that queue is jammed for good by one
    publish of any user that may write to it. A table is length-prefixed, so it is
    skipped whole and replaced by ``{UNREADABLE_HEADERS: why}``; the runtime
    dead-letters such a message.
    """
    try:
        table, end = _decode_table(encoded, offset)
        return table, end
    except Exception as error:  # noqa: BLE001  # anything pika raises on hostile bytes
        (length,) = struct.unpack_from(">I", encoded, offset)
        return {UNREADABLE_HEADERS: f"{type(error).__name__}: {error}"[:200]}, offset + 4 + length


pika.data.decode_table = _tolerant_decode_table  # BasicProperties.decode and nested tables look it up here


class Consuming(Connection):
    """The reading side of a connection; deliveries come out as :class:`Delivery`."""

    def get(self, queue: str, *, timeout: float, ack: bool = True) -> Delivery | None:
        """Wait up to timeout seconds for one message of queue and ack it.

        ack=False: leave it unacked, for the caller to :meth:`ack` once it has put the message
        somewhere else (a crash in between gives it back to the queue, never loses it).
        """
        with mapped_errors(f"get from {queue!r}"):
            self.channel.basic_qos(prefetch_count=1)
            for method, properties, body in self.channel.consume(queue, inactivity_timeout=timeout):
                if method is None:
                    break
                if ack:
                    self.channel.basic_ack(method.delivery_tag)
                self.channel.cancel()
                return _delivery(method, properties, body)
            self.channel.cancel()
        return None

    def browse(self, queue: str, *, limit: int = 10_000) -> list[Delivery]:
        """Up to limit messages of queue, left in it: taken unacked, then all requeued in their place."""
        found = []
        with mapped_errors(f"browse {queue!r}"):
            for _ in range(limit):
                method, properties, body = self.channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                found.append(_delivery(method, properties, body))
            if found:
                self.channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        return found

    def follow(
        self, queue: str, *, timeout: float, arguments: dict[str, Any] | None = None, prefetch: int = 100
    ) -> Iterator[Delivery]:
        """Yield queue's messages (acked) until none came for timeout seconds; a stream reads from arguments'
        ``x-stream-offset`` (a datetime: from that moment on)."""
        with mapped_errors(f"read {queue!r}"):
            self.channel.basic_qos(prefetch_count=prefetch)
            try:
                for method, properties, body in self.channel.consume(
                    queue, inactivity_timeout=timeout, arguments=arguments
                ):
                    if method is None:
                        return
                    self.channel.basic_ack(method.delivery_tag)
                    yield _delivery(method, properties, body)
            finally:
                if self._channel is not None and self._channel.is_open:
                    self._channel.cancel()

    def stream(
        self, queue: str, offset: object, *, idle: float, prefetch: int = 1000
    ) -> Generator[Delivery, None, None]:
        """Yield a stream's messages from offset (first, last, next, a number, a datetime) until none came
        for idle seconds (or the caller stops); acked in bulk, every half prefetch (a stream's ack is only
        its flow control). Each delivery's ``headers["x-stream-offset"]`` is its offset."""
        with mapped_errors(f"read stream {queue!r}"):
            channel = self.channel
            channel.basic_qos(prefetch_count=prefetch)
            unacked = 0
            try:
                for method, properties, body in channel.consume(
                    queue, inactivity_timeout=idle, arguments={"x-stream-offset": offset}
                ):
                    if method is None:
                        return
                    unacked += 1
                    if unacked * 2 >= prefetch:
                        channel.basic_ack(method.delivery_tag, multiple=True)
                        unacked = 0
                    yield _delivery(method, properties, body)
            finally:
                self._drop_channel()

    def _drop_channel(self) -> None:
        """Close the channel without cancelling its consumers first (how a stream's reader stops).

        pika's cancel (and a blocking channel's close) rejects what it buffered or what
        still arrives, and a stream refuses rejects with a connection error (540); a
        closing channel rejects nothing, and the broker forgets its stream consumers.
        The next use of ``channel`` opens another.
        """
        channel, self._channel = self._channel, None
        if channel is not None and channel.is_open:
            channel._impl.close()  # the impl channel: no cancel, no reject

    def consume(
        self,
        queue: str,
        handle_batch: Callable[[list[Delivery]], None],
        *,
        prefetch: int,
        arguments: dict[str, Any] | None = None,
        ack_on_receipt: bool = False,
        should_stop: Callable[[], bool],
        on_tick: Callable[[], None] | None = None,
        tick: float = 0.5,
    ) -> None:
        """Pass queue's messages to handle_batch, as many as have arrived, until should_stop().

        handle_batch acks them (with ack_on_receipt, for a stream's reader, they are acked as they
        arrive: a stream's ack is its credit, not a promise kept). on_tick runs at least every tick
        seconds. A consumer the broker cancels (its queue deleted, or crashed and restarted: RabbitMQ
        3.10 crashes a classic queue that dead-letters a message whose x-death header a client
        forged) is BrokerUnreachableError, so the runner reconnects instead of waiting for good with
        no consumer.
        """
        pending: list[Delivery] = []
        with mapped_errors(f"consume {queue!r}"):
            channel = self.channel
            channel.basic_qos(prefetch_count=prefetch)

            unacked = [0]

            def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
                pending.append(_delivery(method, properties, body))
                if ack_on_receipt:  # a stream's reader: its acks are only credit, so the broker sends on
                    unacked[0] += 1
                    if unacked[0] * 4 >= prefetch:
                        ch.basic_ack(method.delivery_tag, multiple=True)
                        unacked[0] = 0

            cancelled: list[object] = []
            channel.add_on_cancel_callback(cancelled.append)
            tag = channel.basic_consume(queue, on_message, arguments=arguments)
            while not should_stop():
                self._connection.process_data_events(time_limit=tick)  # type: ignore[union-attr]  # open: checked by self.channel
                if pending:
                    batch = pending[:]
                    pending.clear()
                    handle_batch(batch)
                if cancelled:  # else we would wait on the channel for good, consuming nothing
                    raise BrokerUnreachableError(
                        f"consume {queue!r}: the broker cancelled the consumer (the queue was deleted, "
                        "or restarted after a crash)"
                    )
                if on_tick is not None:
                    on_tick()
            if arguments and "x-stream-offset" in arguments:
                self._drop_channel()
            else:
                channel.basic_cancel(tag)

    def wake(self) -> None:
        """From any thread: make a consume() waiting for deliveries turn now (its on_tick runs soon).

        A worker thread that finished with a delivery calls it, so the connection's own
        thread acks at once instead of at the next tick. A closed connection is left alone.
        """
        connection = self._connection
        if connection is None:
            return
        try:
            connection.add_callback_threadsafe(_nothing)
        except Exception:  # noqa: BLE001  # closed meanwhile: nothing waits to be woken
            return

    def ack(self, delivery_tag: int, *, multiple: bool = False) -> None:
        """Ack one delivery, or with multiple every unacked one up to delivery_tag."""
        with mapped_errors("ack"):
            self.channel.basic_ack(delivery_tag, multiple=multiple)


def _nothing() -> None:
    """What wake() schedules: the wake-up is the point."""


def _delivery(method: Any, properties: Any, body: bytes) -> Delivery:
    return Delivery(
        body=body,
        routing_key=method.routing_key,
        exchange=method.exchange,
        delivery_tag=method.delivery_tag,
        redelivered=bool(method.redelivered),
        message_id=properties.message_id,
        type=properties.type,
        headers=dict(properties.headers or {}),
        timestamp=properties.timestamp,
        expiration=properties.expiration,
        user_id=properties.user_id,
    )
