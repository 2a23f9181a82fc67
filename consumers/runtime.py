"""The shared consume loop: ack after handling, retry, dead-letter, reconnect, clean stop.

Every consumer gets (names with the default namespace ``tcx``):

    tcx.<name>            its durable queue (quorum with the ``quorum`` setting), bound to its patterns
    tcx.<name>.retry      failed messages wait here (per-message TTL, growing) and then go back
    tcx.dead  ->  tcx.dead.<name>   messages that cannot be handled, with the reason in headers

A message is acked only after its handler returned, so its side effects are
durable first. A body that does not decode, or a handler raising HandlerError,
is dead-lettered at once; any other failure is retried with backoff up to
``max_attempts`` deliveries, then dead-lettered. Dead-letter headers:
``x-tcx-reason``, ``x-tcx-consumer``, ``x-tcx-attempts``, ``x-tcx-routing-key``.

When the broker goes away the runner reconnects with backoff (tenacity);
unacked messages are redelivered and the handlers' idempotency (event ids
recorded with the side effects) makes the second time a no-op. SIGTERM and SIGINT
finish the current message, ack it, and close.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgspec

from bridge.config import Settings
from bridge.errors import HandlerError, TransportError
from bridge.topology import declare_events
from bridge.transport import Broker, Delivery, OutgoingMessage
from consumers.store import savepoint, transaction

logger = logging.getLogger(__name__)

ATTEMPTS = "x-tcx-attempts"
REASON = "x-tcx-reason"
ROUTING_KEY = "x-tcx-routing-key"
CONSUMER = "x-tcx-consumer"
RETRY_BASE_MS = 500
RETRY_MAX_MS = 30_000


class Binding(NamedTuple):
    """Bind the consumer's queue to exchange with pattern."""

    exchange: str
    pattern: str


class Context(NamedTuple):
    """What a handler may use besides the message: settings, the delivery, and publish."""

    settings: Settings
    delivery: Delivery
    routing_key: str
    publish: Callable[[str, OutgoingMessage], None]


class Consumer:
    """Base of every consumer: a name, bindings, a decoder and a handler."""

    name: str = "consumer"
    database: sqlite3.Connection | None = None  # a store to commit once per batch, before the acks

    @classmethod
    def name_for(cls, settings: Settings) -> str:
        """The consumer's name (its queue is ``<namespace>.<name>``)."""
        return cls.name

    @classmethod
    def bindings(cls, settings: Settings) -> Sequence[Binding]:
        raise NotImplementedError

    @classmethod
    def declare(cls, broker: Broker, settings: Settings) -> None:
        """Declare the exchanges this consumer binds to (the events exchange by default)."""
        declare_events(broker, settings)

    def decode(self, body: bytes, routing_key: str) -> Any:
        """Decode a body; msgspec's DecodeError or ValidationError dead-letter it."""
        raise NotImplementedError

    def handle(self, message: Any, context: Context) -> str:
        """Handle one decoded message; return the outcome for the log line."""
        raise NotImplementedError

    def tick(self, broker: Broker, settings: Settings) -> None:
        """Periodic work between deliveries (default: none)."""

    def close(self) -> None:
        """Release what the consumer holds (stores)."""


class Runner:
    """Runs one consumer against the broker until stopped."""

    def __init__(
        self,
        consumer: Consumer,
        settings: Settings,
        *,
        max_messages: int | None = None,
        idle_exit: float | None = None,
    ) -> None:
        self.consumer = consumer
        self.settings = settings
        self.queue = settings.queue(consumer.name)
        self.retry_queue = f"{self.queue}.retry"
        self.handled = 0
        self._max_messages = max_messages
        self._idle_exit = idle_exit
        self._last_activity = time.monotonic()
        self._stop = threading.Event()
        self._broker: Broker | None = None

    # lifecycle ---------------------------------------------------------------
    def stop(self, *_: object) -> None:
        """Ask the runner to stop after the current message (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        """Consume until stopped, reconnecting with backoff whenever the broker goes away."""
        import tenacity

        def log_retry(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            logger.warning(
                "consumer=%s broker lost (%s); reconnecting in %.1fs",
                self.consumer.name,
                error,
                state.upcoming_sleep,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransportError),
            wait=tenacity.wait_exponential(multiplier=0.5, max=30),
            stop=lambda _: self.stopping,
            sleep=self._sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._run_once()
        except TransportError:
            if not self.stopping:
                raise
        finally:
            self.consumer.close()
        logger.info("consumer=%s stopped after %d message(s)", self.consumer.name, self.handled)

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _run_once(self) -> None:
        with Broker(self.settings.amqp_url, ca_file=self.settings.ca_file) as broker:
            self._broker = broker
            declare_consumer_queues(broker, self.settings, self.consumer)
            logger.info("consumer=%s consuming %s", self.consumer.name, self.queue)
            self._last_activity = time.monotonic()
            broker.consume(
                self.queue,
                self._on_batch,
                prefetch=self.settings.prefetch,
                should_stop=self._should_stop,
                on_tick=lambda: self.consumer.tick(broker, self.settings),
                tick=0.2,
            )
        self._broker = None

    def _should_stop(self) -> bool:
        if self._idle_exit is not None and time.monotonic() - self._last_activity > self._idle_exit:
            self._stop.set()
        return self.stopping

    # a batch of messages -----------------------------------------------------
    def _on_batch(self, deliveries: list[Delivery]) -> None:
        """Handle what arrived; commit the consumer's store once; then ack them all at once.

        With a store (``Consumer.database``), every message runs inside a savepoint of
        one transaction, so a failing message rolls back alone; the commit comes before
        the ack, so nothing is acked before it is durable.
        """
        if self.stopping:
            return  # left unacked: the broker redelivers them after we close
        broker = self._broker
        assert broker is not None  # set for as long as deliveries arrive
        lines = []
        with transaction(self.consumer.database):
            for delivery in deliveries:
                started = time.perf_counter()
                outcome, attempts, routing_key = self._handle_one(broker, delivery)
                lines.append((delivery, routing_key, outcome, attempts, time.perf_counter() - started))
        broker.ack(deliveries[-1].delivery_tag, multiple=True)
        self.handled += len(deliveries)
        self._last_activity = time.monotonic()
        for delivery, routing_key, outcome, attempts, seconds in lines:
            logger.info(
                "consumer=%s type=%s id=%s key=%s outcome=%s attempt=%d ms=%.1f",
                self.consumer.name,
                delivery.type,
                delivery.message_id,
                routing_key,
                outcome,
                attempts,
                seconds * 1000,
            )
        if self._max_messages is not None and self.handled >= self._max_messages:
            self._stop.set()

    def _handle_one(self, broker: Broker, delivery: Delivery) -> tuple[str, int, str]:
        attempts = _attempts(delivery)
        routing_key = str(delivery.headers.get(ROUTING_KEY, delivery.routing_key))
        context = Context(self.settings, delivery, routing_key, broker.publish)
        try:
            with savepoint(self.consumer.database):
                message = self.consumer.decode(delivery.body, routing_key)
                outcome = self.consumer.handle(message, context)
        except TransportError:
            raise  # the connection is gone: the batch stays unacked and comes back
        except Exception as error:  # noqa: BLE001  # decided below: dead-letter or retry
            return self._failed(broker, delivery, routing_key, attempts, error), attempts, routing_key
        return outcome, attempts, routing_key

    def _failed(
        self, broker: Broker, delivery: Delivery, routing_key: str, attempts: int, error: Exception
    ) -> str:
        """Dead-letter what can never succeed, or what failed max_attempts times; else retry later."""
        if isinstance(error, (msgspec.DecodeError, msgspec.ValidationError)):
            return self._dead_letter(broker, delivery, routing_key, attempts, f"undecodable: {error}")
        if isinstance(error, HandlerError):
            return self._dead_letter(broker, delivery, routing_key, attempts, str(error))
        reason = f"{type(error).__name__}: {error}"
        if attempts >= self.settings.max_attempts:
            return self._dead_letter(
                broker, delivery, routing_key, attempts, f"failed {attempts} times; last: {reason}"
            )
        logger.warning(
            "consumer=%s id=%s attempt %d failed: %s",
            self.consumer.name,
            delivery.message_id,
            attempts,
            reason,
        )
        return self._retry(broker, delivery, routing_key, attempts, reason)

    def _retry(self, broker: Broker, delivery: Delivery, routing_key: str, attempts: int, reason: str) -> str:
        delay = min(RETRY_BASE_MS * 2 ** (attempts - 1), RETRY_MAX_MS)
        headers = {**delivery.headers, ATTEMPTS: attempts, ROUTING_KEY: routing_key, REASON: reason}
        broker.publish("", _copy(delivery, self.retry_queue, headers, expiration_ms=delay))
        return f"retry-in-{delay}ms"

    def _dead_letter(
        self, broker: Broker, delivery: Delivery, routing_key: str, attempts: int, reason: str
    ) -> str:
        headers = {
            **delivery.headers,
            ATTEMPTS: attempts,
            ROUTING_KEY: routing_key,
            REASON: reason[:1000],
            CONSUMER: self.consumer.name,
        }
        broker.publish(self.settings.dead_exchange, _copy(delivery, self.consumer.name, headers))
        logger.error(
            "consumer=%s dead-lettered id=%s key=%s: %s",
            self.consumer.name,
            delivery.message_id,
            routing_key,
            reason,
        )
        return "dead-lettered"


def declare_consumer_queues(broker: Broker, settings: Settings, consumer: Consumer | type[Consumer]) -> None:
    """The consumer's queue, retry queue, dead-letter route and bindings (idempotent)."""
    name = consumer.name_for(settings)
    queue = settings.queue(name)
    consumer.declare(broker, settings)
    broker.declare_exchange(settings.dead_exchange, "topic")
    broker.declare_queue(settings.dead_queue(name), arguments=_queue_type(settings))
    broker.bind_queue(settings.dead_queue(name), settings.dead_exchange, name)
    arguments = {
        "x-dead-letter-exchange": settings.dead_exchange,
        "x-dead-letter-routing-key": name,
        **_queue_type(settings),
    }
    if settings.quorum:
        arguments["x-delivery-limit"] = settings.max_attempts
    broker.declare_queue(queue, arguments=arguments)
    broker.declare_queue(
        f"{queue}.retry", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}
    )
    for binding in consumer.bindings(settings):
        broker.bind_queue(queue, binding.exchange, binding.pattern)


def _queue_type(settings: Settings) -> dict[str, Any]:
    return {"x-queue-type": "quorum"} if settings.quorum else {}


def _attempts(delivery: Delivery) -> int:
    """This delivery's attempt number: our retry count, or the broker's redelivery count."""
    counted = int(delivery.headers.get(ATTEMPTS, 0)) + 1
    broker_count = int(delivery.headers.get("x-delivery-count", 0)) + 1  # quorum queues count for us
    return max(counted, broker_count)


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
