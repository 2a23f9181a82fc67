"""The shared consume loop: ack after handling, retry, dead-letter, reconnect, clean stop.

Every consumer (consumers.runtime.consumer) gets (names with the default namespace ``tcx``):

    tcx.<name>            its durable queue (quorum with the ``quorum`` setting), bound to its patterns
    tcx.retry.<name> -> tcx.<name>.retry   retries wait here (per-message TTL, growing), then expire to
                          tcx.again.<name>, bound to tcx.<name> alone
    tcx.dead  ->  tcx.dead.<name>   messages that cannot be handled, with the reason in headers

A retry is published by the consumer itself to its own retry exchange (no other user may write there, and no
user to the again exchange); the headers it carries are believed only on a delivery through the again exchange
signed by the consumer's own user (consumers.runtime.failures.restore). What a message is and whom it is for
is judged only from what the broker vouches for: the exchange and routing key it was delivered with (topic
permissions say who may publish which key) and ``user_id`` (checked against the login; required when
``trust_user_id`` is on). No header a client can write changes that. Queues: bridge.topology.declare_queues.

A message is acked only after its handler returned, so its side effects are durable first; what a failure
leads to (retry, dead letter, reconnect) is decided by its kind (consumers.runtime.failures). A publish the
broker returns as unroutable (a pop for a desk with no agent) is an outcome, not a failure: the message goes
to the unrouted exchange instead (consumers.runtime.publish).

The runner reconnects to the broker and to the store with one backoff (consumers.runtime.backoff): a growing
delay that starts short again after a connection was healthy for a while. An error only an operator can fix
(login refused, unknown vhost, a queue declared with other arguments) stops it with one line. Unacked messages
are redelivered and the handlers' idempotency (event ids recorded with the side effects) makes the second time
a no-op. SIGTERM and SIGINT finish the current batch, ack it, and close.
"""

from __future__ import annotations

import collections
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, cast

from bridge.config import Settings
from bridge.errors import (
    BrokerRefusedError,
    HandlerError,
    StoreUnavailableError,
    TransportError,
)
from bridge.events import MAX_BODY, ForgetRequest  # MAX_BODY: the wire limit, bigger is dead-lettered unread
from bridge.topology import Binding, again_exchange, declare_queues, retry_exchange
from bridge.transport import Broker, Delivery, OutgoingMessage
from consumers.privacy import command as forget_command
from consumers.runtime.backoff import Backoff
from consumers.runtime.consumer import Batch, Consumer, Context
from consumers.runtime.failures import attempts_of, classify, dead_letter, guarded, restore, retry, vouch
from consumers.runtime.metrics import NULL, Metrics, metrics_for
from consumers.runtime.publish import Publisher
from consumers.store.core import Store, as_store, savepoint, transaction

__all__ = [  # the public names, also for the plugins and scripts that import them from here
    "MAX_BODY",
    "Binding",
    "Consumer",
    "Context",
    "Runner",
    "classify",
    "declare_consumer_queues",
]

logger = logging.getLogger(__name__)
LINE = "consumer=%s type=%s id=%s key=%s outcome=%s attempt=%d ms=%.1f"  # the fields, in order


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
        self._publisher = Publisher(settings, consumer.name)
        self._start = 0
        self._again = again_exchange(settings, consumer.name)
        self.before_live: Callable[[Broker], None] | None = None  # a backfill (consumers.runtime.backfill)
        self.in_batch: Callable[[Store | None], None] | None = None  # a backfill's, in each batch's commit
        self._forgets: list[tuple[ForgetRequest, str | None]] = []  # acted on once their batch committed
        self.outcomes: collections.Counter[str] = collections.Counter()  # of the last batch, by outcome
        self._next_sweep = 0.0  # retention: at start, then once a day

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
        backoff = Backoff()
        try:
            while not self.stopping:
                backoff.attempt()
                try:
                    self._run_once()
                except BrokerRefusedError:
                    raise
                except StoreUnavailableError as error:  # the database away: nothing acked, all redelivered
                    if self.stopping:
                        break
                    self._reconnect("store", error, backoff.delay())
                except TransportError as error:
                    if self.stopping:
                        break
                    self._start += 1  # the next node first: this one may be gone
                    # a node that went away after a healthy while: the others are tried at once
                    delay = backoff.delay(was_up=self._connected, at_once=self.settings.broker_count > 1)
                    self.metrics.reconnected(self.consumer.name)
                    self.metrics.connected(self.consumer.name, None)
                    self._reconnect("broker", error, delay)
        finally:
            self.consumer.close()
            self.metrics.close()
        logger.info("consumer=%s stopped after %d message(s)", self.consumer.name, self.handled)

    def _reconnect(self, lost: str, error: Exception, delay: float) -> None:
        """Log what was lost (the broker or the store) and wait the backoff's delay (or until stopped)."""
        logger.warning(
            "consumer=%s %s lost (%s); reconnecting in %.1fs", self.consumer.name, lost, error, delay
        )
        self._sleep(delay)

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
            if self.before_live is not None:  # the live queue exists (and collects) before it begins
                self.before_live(broker)
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
        if now >= self._next_sweep:
            self._next_sweep = now + 86400.0  # retention: once a day
            self.consumer.sweep(self.settings)

    def _should_stop(self) -> bool:
        if self._idle_exit is not None and time.monotonic() - self._last_activity > self._idle_exit:
            self._stop.set()
        return self.stopping

    # a batch of messages -----------------------------------------------------
    def _on_batch(self, deliveries: list[Delivery]) -> None:
        """Handle what arrived; commit the consumer's store once; then ack them all at once.

        Each delivery is decoded once, before prepare(), and the same message goes to
        handle(). With a store (``Consumer.database``), every message runs inside a
        savepoint of one transaction, so a failing message rolls back alone; the commit
        comes before the ack, so nothing is acked before it is durable.
        """
        if self.stopping:
            return  # left unacked: the broker redelivers them after we close
        broker = self._broker
        assert broker is not None  # set for as long as deliveries arrive
        lines = []
        username = broker.username
        deliveries = [restore(delivery, again=self._again, username=username) for delivery in deliveries]
        store = as_store(self.consumer.database)
        publish = functools.partial(self._publisher.publish, broker)  # the handlers' Context.publish
        clock = time.perf_counter
        # a backfill's batch (in_batch records its offset) waits for no ack: its COMMIT may finish behind
        with transaction(store, behind=self.in_batch is not None):
            read = [self._read(delivery) for delivery in deliveries]
            decoded = {
                delivery.delivery_tag: found.message
                for delivery, found in zip(deliveries, read, strict=True)
                if not (found.error or forget_command.is_request(found.message))
            }
            self._prepare(store, Batch(deliveries, decoded))
            for delivery, found in zip(deliveries, read, strict=True):
                started = clock()
                outcome, attempts = self._handle_one(broker, store, delivery, found, publish)
                lines.append((delivery, outcome, attempts, clock() - started + found.seconds))
            if self.in_batch is not None:
                self.in_batch(store)
        for request, user_id in self._forgets:  # committed, not acked yet: a failure redelivers the batch
            self.consumer.forget(self.settings, request, user_id)
        self._forgets.clear()
        if self.in_batch is None:  # (a backfill's stream deliveries are acked as they arrive)
            broker.ack(deliveries[-1].delivery_tag, multiple=True)
        self.handled += len(deliveries)
        self._last_activity = time.monotonic()
        routine = logging.INFO
        if self.in_batch is not None:  # a backfill: its lines counted a batch at a time (it logs them)
            self.outcomes = collections.Counter(outcome for _, outcome, _, _ in lines)
            routine = logging.DEBUG
        for delivery, outcome, attempts, seconds in lines:
            self._log(delivery, outcome, attempts, seconds, routine)
        if self._max_messages is not None and self.handled >= self._max_messages:
            self._stop.set()

    def _log(
        self, delivery: Delivery, outcome: str, attempts: int, seconds: float, routine: int = logging.INFO
    ) -> None:
        """The one line per handled message (and its metrics); at level routine unless it failed."""
        self.metrics.message(self.consumer.name, outcome, seconds)
        level = logging.INFO if outcome == "dead-lettered" or outcome.startswith("retry-in-") else routine
        if not logger.isEnabledFor(level):
            return
        fields = {"consumer": self.consumer.name, "type": delivery.type, "message_id": delivery.message_id,
                  "routing_key": delivery.routing_key, "outcome": outcome, "attempt": attempts,
                  "ms": round(seconds * 1000, 1)}  # fmt: skip
        logger.log(level, LINE, *fields.values(), extra=fields)

    def _prepare(self, store: Store | None, batch: Batch) -> None:
        """The consumer's batch work in a savepoint; if it fails, the messages go one by one."""
        try:
            with savepoint(store):
                self.consumer.prepare(batch)
        except (StoreUnavailableError, TransportError):
            raise
        except Exception as error:  # noqa: BLE001  # each message then meets its own error boundary
            logger.warning(
                "consumer=%s batch of %d: %s; handling them one by one",
                self.consumer.name,
                len(batch),
                classify(error)[1],
            )

    def _read(self, delivery: Delivery) -> _Read:
        """What the broker vouches for, the size, then decode(): the message, or why it cannot be handled."""
        started = time.perf_counter()
        message, error = guarded(functools.partial(self._decode, delivery))
        return _Read(message, error, time.perf_counter() - started)

    def _decode(self, delivery: Delivery) -> Any:
        self._vouch(delivery)
        if len(delivery.body) > MAX_BODY:
            raise HandlerError(f"oversize: the body has {len(delivery.body)} bytes, over {MAX_BODY}")
        if forget_command.is_forget(self.settings, delivery.exchange, delivery.routing_key):
            return forget_command.decode(delivery.body, delivery.user_id)
        return self.consumer.decode(delivery.body, delivery.routing_key)

    def _handle_one(
        self,
        broker: Broker,
        store: Store | None,
        delivery: Delivery,
        read: _Read,
        publish: Callable[[str, OutgoingMessage], bool],
    ) -> tuple[str, int]:
        """One read delivery inside its own error boundary; only a lost connection escapes it."""
        attempts = attempts_of(delivery)
        error = read.error
        if error is None:
            context = Context(self.settings, delivery, delivery.routing_key, publish)
            outcome, error = guarded(functools.partial(self._handle_in, store, read.message, context))
            if error is None:
                return cast("str", outcome), attempts  # handle() returned
        return self._failed(broker, delivery, attempts, error), attempts

    def _context(self, broker: Broker, delivery: Delivery) -> Context:
        publish = functools.partial(self._publisher.publish, broker)
        return Context(self.settings, delivery, delivery.routing_key, publish)

    def _handle_in(self, store: Store | None, message: Any, context: Context) -> str:
        if forget_command.is_request(message):
            self._forgets.append((message, context.delivery.user_id))
            return "forget"
        if store is None or self.consumer.settled(context.delivery):  # settled: prepare wrote it
            return self.consumer.handle(message, context)
        with savepoint(store):
            return self.consumer.handle(message, context)

    @functools.cached_property
    def _exchanges(self) -> frozenset[str]:
        """Where a delivery may come from: the exchanges the consumer is bound to, and its retries' way back
        (worked out once, at the first delivery, not per message)."""
        bound = {binding.exchange for binding in self.consumer.bindings(self.settings)}
        return frozenset({*bound, self._again})

    def _vouch(self, delivery: Delivery) -> None:
        vouch(delivery, self._exchanges, trust_user_id=self.settings.trust_user_id)

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
        delay, message = retry(delivery, attempts)
        broker.publish(retry_exchange(self.settings, self.consumer.name), message)
        return f"retry-in-{delay}ms"

    def _dead_letter(self, broker: Broker, delivery: Delivery, attempts: int, reason: str) -> str:
        context = self._context(broker, delivery)
        try:
            self.consumer.refuse(delivery, context, reason)
        except TransportError:
            raise  # the connection is gone: the batch stays unacked and comes back
        except Exception as error:  # noqa: BLE001  # telling whoever waits is best effort; the dead letter is not
            logger.warning(
                "consumer=%s could not answer for id=%s: %s", self.consumer.name, delivery.message_id, error
            )
        letter = dead_letter(delivery, self.consumer.name, attempts, reason)
        broker.publish(self.settings.dead_exchange, letter)
        self.metrics.dead_lettered(self.consumer.name, reason)
        logger.error(
            "consumer=%s dead-lettered id=%s key=%s: %s",
            self.consumer.name,
            delivery.message_id,
            delivery.routing_key,
            reason,
        )
        return "dead-lettered"


class _Read(NamedTuple):
    """One delivery as read before the batch is prepared: its message, or the error that stops it."""

    message: Any
    error: Exception | None
    seconds: float  # counted in the message's time


def declare_consumer_queues(broker: Broker, settings: Settings, consumer: Consumer | type[Consumer]) -> None:
    """The exchanges the consumer binds to, then its queues (checked, declared only when missing)."""
    consumer.declare(broker, settings)
    declare_queues(broker, settings, consumer.name_for(settings), consumer.bindings(settings))
