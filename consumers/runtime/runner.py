"""The shared consume loop: ack after handling, retry, dead-letter, reconnect, clean stop.

Every consumer gets (names with the default namespace ``tcx``):

    tcx.<name>            its durable queue (quorum with the ``quorum`` setting), bound to its patterns
    tcx.retry.<name> -> tcx.<name>.retry   retries wait here (per-message TTL, growing), then expire to
                          tcx.again.<name>, bound to tcx.<name> alone
    tcx.dead  ->  tcx.dead.<name>   messages that cannot be handled, with the reason in headers

A retry is published by the consumer itself to its own retry exchange (no
other user may write there, and no user to the again exchange) with the
original routing key, and the publisher's user_id and the tries in headers of
its own, which :meth:`Runner._restore` believes only on a delivery through the
again exchange signed by the consumer's own user. What a message is and whom it is for is judged only
from what the broker vouches for: the exchange and routing key it was delivered
with (topic permissions say who may publish which key) and ``user_id`` (checked
against the login; required when ``trust_user_id`` is on). No header a client
can write changes that. The queues are declared by an admin (``tcx-bridge
topology declare``); a process checks them passively and declares only what is
missing, when its user may.

A message is acked only after its handler returned, so its side effects are
durable first. Everything about one delivery (headers, size, decoding,
validation, handling) runs inside its own error boundary, and the outcome of a
failure depends only on its kind (:func:`classify`):

* permanent (oversize, undecodable, invalid values, HandlerError, any bug):
  dead-lettered at once, with the reason;
* transient (the disk, an HTTP CRM, a store that is busy): retried with a
  growing delay up to ``max_attempts`` tries, then dead-lettered (a quorum
  queue's redeliveries count as tries too);
* the connection to the broker, or to a PostgreSQL store, lost: the batch is
  rolled back and stays unacked; the runner reconnects and the broker
  redelivers it.

A publish the broker returns as unroutable (a pop for a desk with no agent) is
an outcome, not a failure: the message goes to the unrouted exchange instead.
Dead-letter headers (for people; nothing reads them back): ``x-tcx-reason``,
``x-tcx-consumer``, ``x-tcx-attempts``, ``x-tcx-routing-key``, ``x-tcx-user-id``, and
``x-tcx-body-bytes`` on an oversize message, whose dead letter keeps only its first MAX_BODY bytes.

The runner reconnects with a growing delay that starts short again after a
connection was healthy for ``HEALTHY_SECONDS``. An error only an operator can
fix (login refused, unknown vhost, a queue declared with other arguments) stops
it with one line. Unacked messages are redelivered and the handlers'
idempotency (event ids recorded with the side effects) makes the second time a
no-op. SIGTERM and SIGINT finish the current batch, ack it, and close.
"""

from __future__ import annotations

import functools
import logging
import signal
import sqlite3
import threading
import time
import urllib.error
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgspec

from bridge.config import Settings
from bridge.errors import (
    BrokerRefusedError,
    HandlerError,
    StoreUnavailableError,
    TransientError,
    TransportError,
    UnroutableError,
)
from bridge.events import MAX_BODY as MAX_BODY  # the wire limit (re-exported): bigger is dead-lettered unread
from bridge.topology import (
    Binding,
    again_exchange,
    dead_letter_key,
    declare_events,
    declare_queues,
    retry_exchange,
)
from bridge.transport import UNREADABLE_HEADERS, Broker, Delivery, OutgoingMessage
from consumers.runtime.metrics import NULL, Metrics, metrics_for
from consumers.store.core import Store, as_store, savepoint, transaction

logger = logging.getLogger(__name__)

ATTEMPTS = "x-tcx-attempts"
REASON = "x-tcx-reason"
ROUTING_KEY = "x-tcx-routing-key"
CONSUMER = "x-tcx-consumer"
USER_ID = "x-tcx-user-id"
BODY_BYTES = "x-tcx-body-bytes"  # on a dead letter whose body was cut to MAX_BODY: its full size
RETRY_BASE_MS = 500
RETRY_MAX_MS = 30_000
MAX_ATTEMPTS_HEADER = 1000  # an x-tcx-attempts above this is not ours: counted as attempt 1
RECONNECT_BASE = 0.5
RECONNECT_MAX = 30.0
HEALTHY_SECONDS = 30.0  # a connection up this long resets the reconnect delay
UNROUTED_LOG_SECONDS = 3600.0  # one log line per unroutable destination per hour


class Context(NamedTuple):
    """What a handler may use besides the message: settings, the delivery, and publish.

    publish(exchange, message) returns False when the broker returned the message
    as unroutable (it was kept in the unrouted exchange instead).
    """

    settings: Settings
    delivery: Delivery
    routing_key: str
    publish: Callable[[str, OutgoingMessage], bool]


class Consumer:
    """Base of every consumer: a name, bindings, a decoder and a handler."""

    name: str = "consumer"
    database: Store | sqlite3.Connection | None = None  # a store to commit once per batch, before the acks
    metrics: Metrics = NULL  # set by the Runner: report consumer-specific metrics here
    signs: bool = True  # its publishes carry user_id: the broker vouches for who sent them

    def __init__(self, settings: Settings | None = None) -> None:
        """``tcx-bridge consume NAME`` creates a plugin with the effective settings."""
        if settings is not None:
            self.settings = settings

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

    def prepare(self, deliveries: Sequence[Delivery]) -> None:
        """Work for the whole batch, in its transaction, before the messages are handled (default: none).

        If it raises, its work is rolled back and the messages are handled one by one.
        """

    def handle(self, message: Any, context: Context) -> str:
        """Handle one decoded message; return the outcome for the log line."""
        raise NotImplementedError

    def refuse(self, delivery: Delivery, context: Context, reason: str) -> None:
        """A message about to be dead-lettered (spoofed, oversize, undecodable, a bug): tell whoever waits
        for an answer (default: nobody). Runs once per dead letter, before it is published."""

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
        metrics: Metrics | None = None,
    ) -> None:
        self.consumer = consumer
        self.settings = settings
        self.metrics = metrics_for(settings) if metrics is None else metrics
        consumer.metrics = self.metrics
        self._next_depth = 0.0
        self.queue = settings.queue(consumer.name)
        self.handled = 0
        self._max_messages = max_messages
        self._idle_exit = idle_exit
        self._last_activity = time.monotonic()
        self._stop = threading.Event()
        self._broker: Broker | None = None
        self._connected = False
        self._unrouted_logged: dict[str, float] = {}
        self._start = 0

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
        """Consume until stopped, reconnecting whenever the broker goes away.

        Raises BrokerRefusedError (an operator must fix something); nothing a
        message does ends the loop.
        """
        failures = 0
        try:
            while not self.stopping:
                connected_at = time.monotonic()
                try:
                    self._run_once()
                except BrokerRefusedError:
                    raise
                except StoreUnavailableError as error:  # the database away: nothing acked, all redelivered
                    if self.stopping:
                        break
                    if time.monotonic() - connected_at >= HEALTHY_SECONDS:
                        failures = 0  # a new outage: start again from the short delays
                    delay = min(RECONNECT_BASE * 2**failures, RECONNECT_MAX)
                    failures += 1
                    logger.warning(
                        "consumer=%s store lost (%s); reconnecting in %.1fs", self.consumer.name, error, delay
                    )
                    self._sleep(delay)
                except TransportError as error:
                    if self.stopping:
                        break
                    self._start += 1  # the next node first: this one may be gone
                    if self._connected and time.monotonic() - connected_at >= HEALTHY_SECONDS:
                        failures = 0  # a new outage: start again from the short delays
                    if self._connected and failures == 0 and self.settings.broker_count > 1:
                        delay = 0.0  # a node went away: the others are tried at once
                    else:
                        delay = min(RECONNECT_BASE * 2**failures, RECONNECT_MAX)
                        failures += 1
                    self.metrics.reconnected(self.consumer.name)
                    self.metrics.connected(self.consumer.name, None)
                    logger.warning(
                        "consumer=%s broker lost (%s); reconnecting in %.1fs",
                        self.consumer.name,
                        error,
                        delay,
                    )
                    self._sleep(delay)
        finally:
            self.consumer.close()
            self.metrics.close()
        logger.info("consumer=%s stopped after %d message(s)", self.consumer.name, self.handled)

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _run_once(self) -> None:
        self._connected = False
        store = as_store(self.consumer.database)
        if store is not None:
            store.ensure()  # the database first: no deliveries while it is away
        with Broker(
            self.settings.amqp_url, ca_file=self.settings.ca_file, start=self._start, sign=self.consumer.signs
        ) as broker:
            self._broker = broker
            self._start = broker.index
            self._connected = True
            declare_consumer_queues(broker, self.settings, self.consumer)
            logger.info("consumer=%s consuming %s on node %s", self.consumer.name, self.queue, broker.node)
            self.metrics.connected(self.consumer.name, broker.node)
            self._last_activity = time.monotonic()
            broker.consume(
                self.queue,
                self._on_batch,
                prefetch=self.settings.prefetch,
                should_stop=self._should_stop,
                on_tick=lambda: self._tick(broker),
                tick=0.2,
            )
        self._broker = None

    def _tick(self, broker: Broker) -> None:
        now = time.monotonic()
        if self.metrics is not NULL and now >= self._next_depth:
            self._next_depth = now + 5.0
            info = broker.queue_info(self.queue)
            if info is not None:
                self.metrics.queue_depth(self.queue, info[0])
        self.consumer.tick(broker, self.settings)

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
        deliveries = [self._restore(broker, delivery) for delivery in deliveries]
        store = as_store(self.consumer.database)
        with transaction(store):
            self._prepare(store, deliveries)
            for delivery in deliveries:
                started = time.perf_counter()
                outcome, attempts = self._handle_one(broker, store, delivery)
                lines.append((delivery, outcome, attempts, time.perf_counter() - started))
        broker.ack(deliveries[-1].delivery_tag, multiple=True)
        self.handled += len(deliveries)
        self._last_activity = time.monotonic()
        for delivery, outcome, attempts, seconds in lines:
            self.metrics.message(self.consumer.name, outcome, seconds)
            logger.info(
                "consumer=%s type=%s id=%s key=%s outcome=%s attempt=%d ms=%.1f",
                self.consumer.name,
                delivery.type,
                delivery.message_id,
                delivery.routing_key,
                outcome,
                attempts,
                seconds * 1000,
                extra={
                    "consumer": self.consumer.name,
                    "type": delivery.type,
                    "message_id": delivery.message_id,
                    "routing_key": delivery.routing_key,
                    "outcome": outcome,
                    "attempt": attempts,
                    "ms": round(seconds * 1000, 1),
                },
            )
        if self._max_messages is not None and self.handled >= self._max_messages:
            self._stop.set()

    def _prepare(self, store: Store | None, deliveries: list[Delivery]) -> None:
        """The consumer's batch work in a savepoint; if it fails, the messages go one by one."""
        try:
            with savepoint(store):
                self.consumer.prepare(deliveries)
        except (StoreUnavailableError, TransportError):
            raise
        except Exception as error:  # noqa: BLE001  # each message then meets its own error boundary
            logger.warning(
                "consumer=%s batch of %d: %s; handling them one by one",
                self.consumer.name,
                len(deliveries),
                classify(error)[1],
            )

    def _handle_one(self, broker: Broker, store: Store | None, delivery: Delivery) -> tuple[str, int]:
        """One delivery inside its own error boundary; only a lost connection escapes it."""
        attempts = 1
        try:
            attempts = _attempts(delivery)
            context = Context(
                self.settings, delivery, delivery.routing_key, functools.partial(self._publish, broker)
            )
            with savepoint(store):
                self._vouch(delivery, context)
                if len(delivery.body) > MAX_BODY:
                    raise HandlerError(f"oversize: the body has {len(delivery.body)} bytes, over {MAX_BODY}")
                message = self.consumer.decode(delivery.body, delivery.routing_key)
                outcome = self.consumer.handle(message, context)
        except StoreUnavailableError:
            raise  # the database is gone: the batch stays unacked and comes back
        except TransportError as error:
            if isinstance(error, UnroutableError):  # our own dead-letter publish came back
                return self._failed(broker, delivery, attempts, error), attempts
            raise  # the connection is gone: the batch stays unacked and comes back
        except Exception as error:  # noqa: BLE001  # classified below: dead-letter or retry
            return self._failed(broker, delivery, attempts, error), attempts
        return outcome, attempts

    def _restore(self, broker: Broker, delivery: Delivery) -> Delivery:
        """A delivery as the consumer sees it: a retry as it was first delivered, headers no client wrote.

        A retry comes back through the consumer's again exchange, which no user may
        write to, from its retry queue, which only this consumer's own user may write
        to (checked: the broker vouches for user_id): its x-tcx-* headers are ours,
        and carry the publisher's user_id and the tries. On any other delivery those
        headers are a client's and are dropped.
        """
        if delivery.exchange == again_exchange(self.settings, self.consumer.name):
            if delivery.user_id != broker.username:
                return delivery._replace(user_id=None, headers={})  # not ours: vouched for by no one
            user = delivery.headers.get(USER_ID)
            return delivery._replace(
                user_id=user if isinstance(user, str) and user else None,
                headers={ATTEMPTS: delivery.headers.get(ATTEMPTS)},
            )
        if ATTEMPTS in delivery.headers or USER_ID in delivery.headers:
            headers = {k: v for k, v in delivery.headers.items() if k not in (ATTEMPTS, USER_ID)}
            return delivery._replace(headers=headers)
        return delivery

    def _vouch(self, delivery: Delivery, context: Context) -> None:
        """What the broker vouches for: the exchange it came through, and a user_id when they are required.

        A message whose headers could not be decoded (see bridge.transport) is dead-lettered too.
        """
        expected = {binding.exchange for binding in self.consumer.bindings(self.settings)}
        expected.add(again_exchange(self.settings, self.consumer.name))
        if delivery.exchange not in expected:
            raise HandlerError(
                f"spoofed: delivered through exchange {delivery.exchange!r}, "
                "not one this consumer is bound to"
            )
        unreadable = delivery.headers.get(UNREADABLE_HEADERS)
        if unreadable is not None:  # x-death (the retry count) among them: never retried
            raise HandlerError(f"undecodable: the message's headers cannot be decoded ({unreadable})")
        if self.settings.trust_user_id and not delivery.user_id:
            reason = (
                "spoofed: the message has no user_id, so the broker vouches for no sender "
                "(every tcx-bridge publisher sets it; trust_user_id = false accepts such messages)"
            )
            raise HandlerError(reason)

    def _publish(self, broker: Broker, exchange: str, message: OutgoingMessage) -> bool:
        """A handler's publish: a message the broker returns goes to the unrouted exchange."""
        try:
            broker.publish(exchange, message)
        except UnroutableError:
            pass
        else:
            return True
        headers = {
            **(message.headers or {}),
            "x-tcx-unrouted-exchange": exchange,
            CONSUMER: self.consumer.name,
        }
        broker.publish(self.settings.unrouted_exchange, message._replace(headers=headers), mandatory=False)
        destination = f"{exchange}/{message.routing_key}"
        now = time.monotonic()
        if now - self._unrouted_logged.get(destination, -UNROUTED_LOG_SECONDS) >= UNROUTED_LOG_SECONDS:
            self._unrouted_logged[destination] = now
            logger.warning(
                "consumer=%s nobody listens for %s on %r (is that desk's agent running?); "
                "kept in %r; logged once an hour",
                self.consumer.name,
                message.routing_key,
                exchange,
                self.settings.unrouted_exchange,
            )
        return False

    def _failed(self, broker: Broker, delivery: Delivery, attempts: int, error: Exception) -> str:
        """Dead-letter what can never succeed, or what failed max_attempts times; else retry later."""
        kind, reason = classify(error)
        if kind == "permanent":
            return self._dead_letter(broker, delivery, attempts, reason)
        if attempts >= self.settings.max_attempts:
            return self._dead_letter(broker, delivery, attempts, f"failed {attempts} times; last: {reason}")
        logger.warning(
            "consumer=%s id=%s attempt %d failed: %s",
            self.consumer.name,
            delivery.message_id,
            attempts,
            reason,
        )
        self.metrics.retried(self.consumer.name)
        delay = min(RETRY_BASE_MS * 2 ** (attempts - 1), RETRY_MAX_MS)
        headers = {ATTEMPTS: attempts, USER_ID: delivery.user_id or ""}  # only ours: no client's header
        message = _copy(delivery, delivery.routing_key, headers, expiration_ms=delay)
        broker.publish(retry_exchange(self.settings, self.consumer.name), message)
        return f"retry-in-{delay}ms"

    def _dead_letter(self, broker: Broker, delivery: Delivery, attempts: int, reason: str) -> str:
        context = Context(
            self.settings, delivery, delivery.routing_key, functools.partial(self._publish, broker)
        )
        try:
            self.consumer.refuse(delivery, context, reason)
        except TransportError:
            raise  # the connection is gone: the batch stays unacked and comes back
        except Exception as error:  # noqa: BLE001  # telling whoever waits is best effort; the dead letter is not
            logger.warning(
                "consumer=%s could not answer for id=%s: %s", self.consumer.name, delivery.message_id, error
            )
        headers = {
            **delivery.headers,
            ATTEMPTS: attempts,
            ROUTING_KEY: delivery.routing_key,
            REASON: reason[:1000],
            CONSUMER: self.consumer.name,
        }
        if delivery.user_id:
            headers[USER_ID] = delivery.user_id
        dead = _copy(delivery, dead_letter_key(self.consumer.name), headers)
        if len(dead.body) > MAX_BODY:  # kept for people to read: not every consumer's copy of 100 MB
            headers[BODY_BYTES] = len(dead.body)
            dead = dead._replace(body=dead.body[:MAX_BODY])
        broker.publish(self.settings.dead_exchange, dead)
        self.metrics.dead_lettered(self.consumer.name, reason)
        logger.error(
            "consumer=%s dead-lettered id=%s key=%s: %s",
            self.consumer.name,
            delivery.message_id,
            delivery.routing_key,
            reason,
        )
        return "dead-lettered"


def declare_consumer_queues(broker: Broker, settings: Settings, consumer: Consumer | type[Consumer]) -> None:
    """The exchanges the consumer binds to, then its queues (checked, declared only when missing)."""
    consumer.declare(broker, settings)
    declare_queues(broker, settings, consumer.name_for(settings), consumer.bindings(settings))


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


def _attempts(delivery: Delivery) -> int:
    """This delivery's try: our count on a retry (see Runner._restore), or the broker's redeliveries."""
    retried = _count(delivery.headers.get(ATTEMPTS))
    redelivered = _count(delivery.headers.get("x-delivery-count"))  # quorum queues count for us
    return max(retried, redelivered) + 1


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
