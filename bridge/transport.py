"""Everything that touches pika: connect, declare, publish with confirms, get, consume.

pika's exceptions are mapped to ours in :func:`mapped_errors`, the one place
they are caught; none escapes this module.
"""

from __future__ import annotations

import logging
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import pika
import pika.data
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils import connection_workflow

from bridge.config import host_port, split_urls
from bridge.errors import (
    AccessRefusedError,
    BrokerCertificateError,
    BrokerRefusedError,
    BrokerRejectedError,
    BrokerUnreachableError,
    PublishNackedError,
    TransportError,
    UnroutableError,
)

logger = logging.getLogger(__name__)

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

ACCESS_REFUSED = 403
NOT_FOUND = 404
PRECONDITION_FAILED = 406


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


def parameters(url: str, *, ca_file: str | None = None, timeout: float = 5.0) -> pika.URLParameters:
    """Connection parameters for url; amqps:// verifies the certificate (optionally against ca_file)."""
    try:
        params = pika.URLParameters(url)
    except ValueError as error:
        raise BrokerUnreachableError(f"broker URL is not usable: {error}") from None
    if params.ssl_options is not None and ca_file:
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except ssl.SSLError as error:  # retrying cannot fix a file: an operator must
            raise BrokerRefusedError(
                f"CA file {ca_file!r} is not a PEM CA bundle ({error.reason or error}); set ca_file to a "
                "file of -----BEGIN CERTIFICATE----- blocks (convert DER with openssl x509 -inform der)"
            ) from None
        except OSError as error:
            raise BrokerRefusedError(
                f"CA file {ca_file!r} cannot be read ({error.strerror or error}); "
                "fix ca_file or the file's rights"
            ) from None
        params.ssl_options = pika.SSLOptions(context, params.host)
    params.connection_attempts = 1
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = timeout
    return params


@contextmanager
def mapped_errors(action: str, *, ca_file: str | None = None) -> Iterator[None]:
    """Turn pika's (and the socket layer's) exceptions into our TransportError tree.

    A server certificate that does not verify is for an operator (BrokerRefusedError),
    named with the CA file it was checked against (ca_file, else the system's CAs).
    """
    try:
        yield
    except pika.exceptions.UnroutableError:
        raise UnroutableError(f"{action}: the broker returned the message as unroutable") from None
    except pika.exceptions.NackError:
        raise PublishNackedError(f"{action}: the broker nacked the message") from None
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == ACCESS_REFUSED:
            raise AccessRefusedError(
                f"{action}: the broker refused: {error.reply_text}; grant the user this right "
                "(rabbitmqctl set_permissions / set_topic_permissions)"
            ) from None
        raise BrokerRejectedError(
            f"{action}: the broker refused: {error.reply_code} {error.reply_text}", error.reply_code
        ) from None
    except pika.exceptions.ProbableAuthenticationError:
        raise BrokerRefusedError(
            f"{action}: the broker refused the login (ACCESS_REFUSED); check the user and password "
            "in amqp_url"
        ) from None
    except pika.exceptions.ProbableAccessDeniedError as error:
        raise BrokerRefusedError(
            f"{action}: the broker refused the virtual host (NOT_ALLOWED: {_describe(error)}); "
            "check the vhost in amqp_url (%2F is the default one) and the user's permissions on it"
        ) from None
    except (
        pika.exceptions.AMQPConnectionError,
        pika.exceptions.ConnectionClosed,
        connection_workflow.AMQPConnectorException,  # e.g. a handshake past its timeout (not an AMQPError)
        connection_workflow.AMQPConnectionWorkflowFailed,
        ssl.SSLError,
        OSError,
    ) as error:
        inner = _innermost(error)
        if isinstance(inner, ssl.SSLCertVerificationError):
            raise _untrusted(action, inner, ca_file) from None
        detail = _describe(error)
        raise BrokerUnreachableError(f"{action}: the broker cannot be reached ({detail})") from None
    except pika.exceptions.AMQPError as error:
        raise TransportError(f"{action}: {type(error).__name__}: {error}") from None


class Broker:
    """One connection with one channel in publisher-confirm mode, to the first broker node that answers.

    url may hold several comma-separated addresses (a cluster): connect() tries
    them in turn from position ``start``, each within ``connect_timeout`` seconds,
    with no pause between nodes; ``node`` and ``index`` say which one answered.
    """

    def __init__(
        self,
        url: str,
        *,
        ca_file: str | None = None,
        timeout: float = 5.0,
        start: int = 0,
        connect_timeout: float | None = None,
        sign: bool = True,
    ) -> None:
        """sign: every publish carries user_id = this connection's user (the broker checks it)."""
        each = timeout if connect_timeout is None else min(connect_timeout, timeout)
        self._params = [parameters(one, ca_file=ca_file, timeout=each) for one in split_urls(url)]
        self._ca_file = ca_file
        self._sign = sign
        if not self._params:
            raise BrokerUnreachableError("no broker URL given")
        for params in self._params:
            params.blocked_connection_timeout = timeout
        self.start = start % len(self._params)
        self.index = self.start
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    @property
    def node(self) -> str:
        """host:port of the node this connection is on (or will try first)."""
        params = self._params[self.index]
        return host_port(params.host, params.port)

    def _signed(self, message: OutgoingMessage) -> OutgoingMessage:
        if not self._sign or message.user_id is not None:
            return message
        return message._replace(user_id=self.username)

    @property
    def username(self) -> str:
        """The user this connection logs in as (what a publish's user_id must be)."""
        credentials = self._params[self.index].credentials
        return str(getattr(credentials, "username", "guest"))

    @property
    def size(self) -> int:
        """How many broker addresses there are."""
        return len(self._params)

    def __enter__(self) -> Broker:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def connect(self) -> None:
        """Connect to the first address that answers, from ``start`` on; an operator error stops at once."""
        failures: list[str] = []
        for offset in range(len(self._params)):
            index = (self.start + offset) % len(self._params)
            params = self._params[index]
            try:
                with mapped_errors(
                    f"connect to {host_port(params.host, params.port)}", ca_file=self._ca_file
                ):
                    self._connection = pika.BlockingConnection(params)
            except BrokerUnreachableError as error:
                failures.append(str(error))
                continue
            self.index = index
            if len(self._params) > 1:
                logger.info("connected to broker node %s:%s", params.host, params.port)
            return
        if len(failures) == 1:
            raise BrokerUnreachableError(failures[0])
        raise BrokerUnreachableError(f"no broker node answers: {'; '.join(failures)}")

    @property
    def channel(self) -> BlockingChannel:
        """The open channel, reopened (with confirms) after the broker closed it."""
        if self._connection is None or not self._connection.is_open:
            raise BrokerUnreachableError("the connection to the broker is closed")
        if self._channel is None or not self._channel.is_open:
            with mapped_errors("open a channel"):
                self._channel = self._connection.channel()
                self._channel.confirm_delivery()
        return self._channel

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError) as error:  # closing is best effort
                logger.debug("closing the connection failed: %s", error)

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
        state = {"acked": 0, "failed": len(messages) + 1}
        tags: dict[str, int] = {}

        def on_confirm(frame: Any) -> None:
            method = frame.method
            upto = method.delivery_tag if method.delivery_tag else len(messages)
            if isinstance(method, pika.spec.Basic.Nack):
                first = state["acked"] + 1 if method.multiple else method.delivery_tag
                state["failed"] = min(state["failed"], max(first, 1) if upto else first)
            else:
                state["acked"] = max(state["acked"], upto) if method.multiple else state["acked"]
                acked_one.add(method.delivery_tag)

        def on_return(_channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
            state["failed"] = min(state["failed"], tags.get(properties.message_id, 1))

        acked_one: set[int] = set()
        action = f"publish {len(messages)} message(s) to {exchange!r}"
        try:
            with mapped_errors(action):
                channel = self._connection.channel()  # its own channel: confirms handled here, in bulk
                impl = channel._impl  # pika's async channel: many publishes, then their confirms
                selected: list[bool] = []
                impl.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _: selected.append(True))
                impl.add_on_return_callback(on_return)
                closed: list[Any] = []
                impl.add_on_close_callback(lambda _channel, reason: closed.append(reason))
                deadline = time.monotonic() + timeout
                while not selected and impl.is_open and time.monotonic() < deadline:
                    self._connection.process_data_events(time_limit=0.002)
                for tag, message in enumerate(messages, start=1):
                    tags[message.message_id] = tag
                    impl.basic_publish(
                        exchange,
                        message.routing_key,
                        message.body,
                        _properties(self._signed(message)),
                        mandatory=True,
                    )
                while impl.is_open and time.monotonic() < deadline:
                    if _confirmed_prefix(state["acked"], acked_one, len(messages)) == len(messages):
                        break
                    if state["failed"] <= len(messages) and all(
                        tag in acked_one or tag <= state["acked"] for tag in range(1, state["failed"])
                    ):
                        break
                    self._connection.process_data_events(time_limit=0.002)
                if impl.is_open:
                    channel.close()
                elif closed and isinstance(closed[0], pika.exceptions.ChannelClosedByBroker):
                    raise closed[0]  # e.g. 404: the exchange is missing (mapped to our error just below)
        except TransportError as error:
            prefix = min(_confirmed_prefix(state["acked"], acked_one, len(messages)), state["failed"] - 1)
            return prefix, error
        prefix = min(_confirmed_prefix(state["acked"], acked_one, len(messages)), state["failed"] - 1)
        if prefix == len(messages):
            return prefix, None
        if state["failed"] <= len(messages):
            return prefix, PublishNackedError(f"{action}: the broker refused message {state['failed']}")
        return prefix, BrokerUnreachableError(f"{action}: no confirm within {timeout:g}s")

    def declare_exchange(self, name: str, kind: str, *, arguments: dict[str, Any] | None = None) -> None:
        with mapped_errors(f"declare exchange {name!r}"):
            self.channel.exchange_declare(name, kind, durable=True, arguments=arguments)

    def ensure_exchange(self, name: str, kind: str, *, arguments: dict[str, Any] | None = None) -> None:
        """Check that the exchange exists (passively: no right needed); declare it only when it does not.

        A user without the configure right gets one line naming the exchange and the fix.
        """
        if self.exchange_exists(name):
            return
        try:
            self.declare_exchange(name, kind, arguments=arguments)
        except BrokerRefusedError:
            raise BrokerRefusedError(
                f"exchange {name!r} does not exist and user {self.username!r} may not declare it "
                "(no configure right on it); run tcx-bridge topology declare as an admin first"
            ) from None

    def exchange_exists(self, name: str) -> bool:
        try:
            with mapped_errors(f"check exchange {name!r}"):
                self.channel.exchange_declare(name, passive=True)
        except BrokerRejectedError as error:
            if error.reply_code == NOT_FOUND:
                return False
            raise
        return True

    def declare_queue(self, name: str, *, arguments: dict[str, Any] | None = None) -> int:
        """Declare a durable queue; return how many messages it holds.

        A queue that exists with other arguments (classic vs quorum) is a
        BrokerRefusedError saying how to migrate it.
        """
        try:
            with mapped_errors(f"declare queue {name!r}"):
                result = self.channel.queue_declare(name, durable=True, arguments=arguments)
        except BrokerRejectedError as error:
            if error.reply_code != PRECONDITION_FAILED:
                raise
            raise BrokerRefusedError(_mismatch(name, arguments or {}, str(error))) from None
        return int(result.method.message_count)

    def declare_private_queue(self) -> str:
        """A server-named queue that lives as long as this connection; return its name."""
        with mapped_errors("declare a private queue"):
            result = self.channel.queue_declare("", exclusive=True)  # gone with the connection
        return str(result.method.queue)

    def queue_info(self, name: str) -> tuple[int, int] | None:
        """(messages ready, consumers) of a queue, or None when it does not exist."""
        try:
            with mapped_errors(f"check queue {name!r}"):
                result = self.channel.queue_declare(name, passive=True)
        except BrokerRejectedError as error:
            if error.reply_code == NOT_FOUND:
                return None
            raise
        return int(result.method.message_count), int(result.method.consumer_count)

    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        with mapped_errors(f"bind {queue!r} to {exchange!r} with {routing_key!r}"):
            self.channel.queue_bind(queue, exchange, routing_key)

    def delete_queue(self, name: str) -> None:
        with mapped_errors(f"delete queue {name!r}"):
            self.channel.queue_delete(name)

    def delete_exchange(self, name: str) -> None:
        with mapped_errors(f"delete exchange {name!r}"):
            self.channel.exchange_delete(name)

    def get(self, queue: str, *, timeout: float) -> Delivery | None:
        """Wait up to timeout seconds for one message of queue and ack it."""
        with mapped_errors(f"get from {queue!r}"):
            self.channel.basic_qos(prefetch_count=1)
            for method, properties, body in self.channel.consume(queue, inactivity_timeout=timeout):
                if method is None:
                    break
                self.channel.basic_ack(method.delivery_tag)
                self.channel.cancel()
                return _delivery(method, properties, body)
            self.channel.cancel()
        return None

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

    def consume(
        self,
        queue: str,
        handle_batch: Callable[[list[Delivery]], None],
        *,
        prefetch: int,
        should_stop: Callable[[], bool],
        on_tick: Callable[[], None] | None = None,
        tick: float = 0.5,
    ) -> None:
        """Pass queue's messages to handle_batch, as many as have arrived, until should_stop().

        handle_batch acks them. on_tick runs at least every tick seconds. A consumer the broker
        cancels (its queue deleted, or crashed and restarted: RabbitMQ 3.10 crashes a classic queue
        that dead-letters a message whose x-death header a client forged) is BrokerUnreachableError,
        so the runner reconnects instead of waiting for good with no consumer.
        """
        pending: list[Delivery] = []
        with mapped_errors(f"consume {queue!r}"):
            channel = self.channel
            channel.basic_qos(prefetch_count=prefetch)

            def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
                pending.append(_delivery(method, properties, body))

            cancelled: list[object] = []
            channel.add_on_cancel_callback(cancelled.append)
            tag = channel.basic_consume(queue, on_message)
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
            channel.basic_cancel(tag)

    def ack(self, delivery_tag: int, *, multiple: bool = False) -> None:
        """Ack one delivery, or with multiple every unacked one up to delivery_tag."""
        with mapped_errors("ack"):
            self.channel.basic_ack(delivery_tag, multiple=multiple)

    def reject(self, delivery_tag: int) -> None:
        """Reject one delivery, not requeued: its queue dead-letters it (the broker, not us, moves it)."""
        with mapped_errors("reject"):
            self.channel.basic_nack(delivery_tag, multiple=False, requeue=False)


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


def _confirmed_prefix(acked_upto: int, acked: set[int], total: int) -> int:
    """How many messages from the first are confirmed, given a multiple-ack mark and single acks."""
    prefix = acked_upto
    while prefix < total and (prefix + 1) in acked:
        prefix += 1
    return prefix


def _mismatch(name: str, arguments: dict[str, Any], detail: str) -> str:
    """The one line for a queue that exists with other arguments than ours."""
    wanted = str(arguments.get("x-queue-type", "classic"))
    current = "quorum" if wanted != "quorum" else "classic"
    quorum_only = ("x-dead-letter-strategy", "x-delivery-limit", "x-overflow")
    if "x-queue-type" in detail or (wanted == "classic" and any(arg in detail for arg in quorum_only)):
        return (
            f"queue {name!r} exists as a {current} queue but the settings ask for a {wanted} queue "
            f"(quorum={'true' if wanted == 'quorum' else 'false'}); either set TCX_BRIDGE_QUORUM="
            f"{'false' if wanted == 'quorum' else 'true'}, or migrate: stop its consumers, let it drain "
            f"(or shovel its messages away), delete it (rabbitmqctl delete_queue {name}) and start again"
        )
    return (
        f"queue {name!r} exists with other arguments than tcx-bridge declares ({detail}); "
        f"delete it (rabbitmqctl delete_queue {name}) once drained, or align the settings"
    )


def _untrusted(
    action: str, error: ssl.SSLCertVerificationError, ca_file: str | None
) -> BrokerCertificateError:
    against = f"CA file {ca_file!r}" if ca_file else "the system's CAs (no ca_file set)"
    reason = error.verify_message or str(error)
    if "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
        return BrokerCertificateError(
            f"{action}: the broker's TLS certificate is for another host name ({reason}); "
            "connect with the name the certificate was issued for",
            wrong_host=True,
        )
    return BrokerCertificateError(
        f"{action}: the broker's TLS certificate is not signed by a CA in {against} ({reason}); "
        "set ca_file to the CA that issued the broker's certificate",
        wrong_host=False,
    )


def _innermost(error: BaseException) -> BaseException:
    """The cause pika's connection workflow nests inside its own errors."""
    for _ in range(5):
        nested = getattr(error, "exceptions", None)
        if nested:
            error = nested[-1]
        elif isinstance(getattr(error, "exception", None), BaseException):
            error = error.exception  # type: ignore[attr-defined]  # pika's phase errors wrap the cause
        elif error.args and isinstance(error.args[0], BaseException):
            error = error.args[0]
        else:
            break
    return error


def _describe(error: BaseException) -> str:
    """The innermost useful text of a pika connection error (its workflow nests the cause)."""
    error = _innermost(error)
    return str(error) or type(error).__name__


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


def refused_for_good(error: Exception) -> bool:
    """Whether the broker refused a publish for a reason retrying cannot fix.

    A missing right (ACCESS_REFUSED on the exchange or, by topic permissions, on the
    routing key), an exchange that is missing and cannot be declared (NOT_FOUND),
    a message the broker will never take (PRECONDITION_FAILED: too large, a user_id
    not this user's). Unreachable, nacked, timed out: transient, not for good.
    """
    if isinstance(error, BrokerRefusedError):
        return True
    return isinstance(error, BrokerRejectedError) and error.reply_code in (
        ACCESS_REFUSED,
        NOT_FOUND,
        PRECONDITION_FAILED,
    )
