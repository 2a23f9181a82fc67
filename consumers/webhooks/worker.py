"""One target's delivery loop: its own connection, queue, retries, pause and requests in flight.

A worker (a thread of ``tcx-bridge consume webhooks``) consumes ``<namespace>.webhooks.<target>``
with a connection of its own and posts each event as it arrives, at most
``concurrency`` requests in flight: each call has a lane (consumers.webhooks.lanes),
a call's events go one after the other, calls in parallel. As requests finish, the
connection's thread publishes the retries (to the target's own retry exchange) and
the dead letters, and acks. A slow or dead target holds up only its own worker.

What a message is, is judged as the runtime does (consumers.runtime.runner): the
exchange it came through (the events exchange, or its own again exchange, whose
headers only its own user wrote: consumers.runtime.failures.restore) and, with
``trust_user_id``, the user_id the broker checked.

When the target pauses (consumers.webhooks.policy.Breaker), the events not yet
tried are left unacked and the consumer cancelled, so the broker keeps them in
order in the queue; while paused the worker trims the queue to ``max_backlog``
(the oldest are dead-lettered) and waits for ``resume_after`` or ``webhooks enable``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import msgspec

from bridge.access import desk_of_user
from bridge.config import Settings
from bridge.errors import BrokerRefusedError, TransportError
from bridge.events import MAX_BODY, CallEvent, DialResult
from bridge.topology import Binding, again_exchange, declare_events, declare_queues, retry_exchange
from bridge.transport import UNREADABLE_HEADERS, Broker, Delivery, OutgoingMessage
from consumers.runtime.backoff import Backoff
from consumers.runtime.failures import ATTEMPTS, SINCE, USER_ID, attempts_of, dead_letter, restore
from consumers.runtime.metrics import NULL, Metrics
from consumers.webhooks.delivery import Result, Sender
from consumers.webhooks.formats import BusEvent, Formatter, event_id
from consumers.webhooks.lanes import Lanes
from consumers.webhooks.policy import Breaker, Order, retry_delay
from consumers.webhooks.settings import Target
from consumers.webhooks.signing import key_of, signature_headers
from consumers.webhooks.stats import Stats

logger = logging.getLogger(__name__)

PAUSED_POLL = 0.5  # seconds between looks at a paused target (enable requests, backlog)


def consumer_name(target: Target) -> str:
    """A target's consumer name: its queue is <namespace>.webhooks.<target>."""
    return f"webhooks.{target.name}"


def bindings(settings: Settings, target: Target) -> list[Binding]:
    return [Binding(settings.exchange, pattern) for pattern in target.events]


_DECODER = msgspec.json.Decoder(BusEvent)  # call events, dial results, callback.* events


class Item(NamedTuple):
    """One delivery of a batch, read: its message (None when it cannot be handled) and its call."""

    delivery: Delivery
    message: BusEvent | None
    error: str | None
    call: str


class Worker:
    """Delivers one target's queue until stop is set (run() is the thread's body)."""

    def __init__(
        self,
        target: Target,
        settings: Settings,
        secrets: tuple[str, ...],
        agents: dict[str, str],
        stop: threading.Event,
        *,
        enabled: Callable[[], bool] = lambda: False,
        metrics: Metrics = NULL,
    ) -> None:
        self.target = target
        self.settings = settings
        self.name = consumer_name(target)
        self.queue = settings.queue(self.name)
        self.keys = tuple(key_of(secret) for secret in secrets)
        self.formatter = Formatter(target.format, settings.namespace, agents)
        self.sender = Sender(target)
        self.breaker = Breaker(target)
        self.order = Order()
        self.stats = Stats(target.name)
        self.stop = stop
        self.enabled = enabled  # True once per `webhooks enable NAME` request
        self.metrics = metrics
        self.error: Exception | None = None  # what stopped it for good (an operator must act)
        self._again = again_exchange(settings, self.name)
        self._retry = retry_exchange(settings, self.name)
        self._exchanges = frozenset({*(b.exchange for b in bindings(settings, target)), self._again})
        self._pool = ThreadPoolExecutor(target.concurrency, thread_name_prefix=f"webhook-{target.name}")
        self._lanes = Lanes(self._pool, self._deliver)

    # the loop ------------------------------------------------------------------
    def run(self) -> None:
        backoff = Backoff()
        try:
            while not self.stop.is_set():
                backoff.attempt()
                try:
                    with Broker(self.settings.amqp_url, ca_file=self.settings.ca_file, sign=True) as broker:
                        self._session(broker)
                except BrokerRefusedError as error:
                    self.error = error
                    logger.error("webhook=%s stopped: %s", self.target.name, error)
                    return
                except TransportError as error:
                    self.metrics.reconnected(self.name)
                    self.metrics.connected(self.name, None)
                    delay = backoff.delay()
                    self.stats.set_state("reconnecting")
                    logger.warning(
                        "webhook=%s broker lost (%s); reconnecting in %.1fs", self.target.name, error, delay
                    )
                    self.stop.wait(delay)
        finally:
            self._pool.shutdown(wait=True)
            self.sender.close()

    def _session(self, broker: Broker) -> None:
        """One connection: consume until stopped or paused (then the connection closes, and the
        broker puts what this channel had not acked back in the queue, in order), or wait paused."""
        if self.breaker.paused:
            self._while_paused(broker)
            return
        declare_events(broker, self.settings)
        declare_queues(broker, self.settings, self.name, bindings(self.settings, self.target))
        self.stats.set_state("delivering")
        self.metrics.connected(self.name, broker.node)
        self._lanes.wake = broker.wake
        logger.info("webhook=%s consuming %s", self.target.name, self.queue)
        try:
            broker.consume(
                self.queue,
                functools.partial(self._on_batch, broker),
                prefetch=min(max(self.settings.prefetch, self.target.concurrency * 32), 1000),
                should_stop=lambda: self.stop.is_set() or self.breaker.paused,
                on_tick=functools.partial(self._tick, broker),
                tick=0.2,
            )
            self._lanes.drained.wait()  # what is in flight ends (the rest comes back held)
            self._settle_done(broker)
        finally:
            self._lanes.forget()  # a lost connection: the broker redelivers whatever was not acked

    def _tick(self, broker: Broker) -> None:
        self._settle_done(broker)
        if self.enabled():
            self.breaker.resume()
        if self.stats.backlog_due():
            info = broker.queue_info(self.queue)
            self.stats.backlog(info[0] if info else 0)

    def _while_paused(self, broker: Broker) -> None:
        """Paused: keep the backlog under max_backlog; resume on time or when enabled."""
        self.stats.set_state("paused", self.breaker.paused_until)
        while not self.stop.is_set() and self.breaker.paused:
            if self.enabled():
                self.breaker.resume()
                logger.warning("webhook=%s enabled again by request", self.target.name)
                break
            info = broker.queue_info(self.queue)
            backlog = info[0] if info else 0
            self.stats.backlog(backlog)
            for _ in range(max(backlog - self.target.max_backlog, 0)):
                self._drop_oldest(broker)
            self.stop.wait(PAUSED_POLL)  # queue_info's round trip keeps the connection's heartbeats going
        if not self.breaker.paused:
            logger.warning("webhook=%s resumed", self.target.name)

    def _drop_oldest(self, broker: Broker) -> None:
        delivery = broker.get(self.queue, timeout=1.0, ack=False)  # acked once its dead letter is confirmed
        if delivery is None:
            return
        reason = f"backlog over max_backlog ({self.target.max_backlog}) while the target was paused"
        item = self._read(restore(delivery, again=self._again, username=broker.username))
        if item.message is not None:  # the call's later events no longer wait for it
            self.order.done(item.call, event_id(item.message))
        self._dead(broker, item.delivery, attempts_of(item.delivery), reason)
        broker.ack(delivery.delivery_tag)

    # a batch -------------------------------------------------------------------
    def _on_batch(self, broker: Broker, deliveries: list[Delivery]) -> None:
        """Each event to its call's lane (one at a time per call, ``concurrency`` lanes at once);
        what cannot be handled is dead-lettered now. Acks come as the lanes finish (_settle_done)."""
        for delivery in deliveries:
            item = self._read(restore(delivery, again=self._again, username=broker.username))
            if item.error is not None:
                self._settle(broker, item, None)
                broker.ack(delivery.delivery_tag)
            else:
                self._lanes.add(item)
        self._settle_done(broker)

    def _settle_done(self, broker: Broker) -> None:
        """In the connection's thread: publish and ack what the lanes finished; held ones stay unacked."""
        for item, result in self._lanes.finished():
            if result.verdict == "held":
                continue  # back in the queue, in order, when this connection closes
            self._settle(broker, item, result)
            broker.ack(item.delivery.delivery_tag)

    def _read(self, delivery: Delivery) -> Item:
        """What the broker vouches for, the size, then the event (as consumers.runtime.runner reads it)."""
        problem = None
        if delivery.exchange not in self._exchanges:
            problem = f"spoofed: delivered through exchange {delivery.exchange!r}, not one it is bound to"
        elif delivery.headers.get(UNREADABLE_HEADERS) is not None:
            problem = f"undecodable: the headers cannot be decoded ({delivery.headers[UNREADABLE_HEADERS]})"
        elif self.settings.trust_user_id and not delivery.user_id:
            problem = "spoofed: the message has no user_id, so the broker vouches for no sender"
        elif len(delivery.body) > MAX_BODY:
            problem = f"oversize: the body has {len(delivery.body)} bytes, over {MAX_BODY}"
        if problem:
            return Item(delivery, None, problem, "")
        try:
            message = _DECODER.decode(delivery.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            return Item(delivery, None, f"undecodable: {error}", "")
        speaks_for = desk_of_user(delivery.user_id)
        if self.settings.trust_user_id and speaks_for not in (None, message.desk):
            problem = (
                f"spoofed: the event is for desk {message.desk!r} but user {delivery.user_id!r} "
                f"published it, who speaks for desk {speaks_for!r} only"
            )
            return Item(delivery, None, problem, "")
        if message.routing_key != delivery.routing_key:  # only tcx-callbacks may publish callback.*
            problem = (
                f"spoofed: a {message.routing_key!r} message delivered with routing key "
                f"{delivery.routing_key!r}, which vouches for another kind"
            )
            return Item(delivery, None, problem, "")
        if isinstance(message, CallEvent):
            call = f"call/{message.desk}/{message.call_id or message.event_id}"
        elif isinstance(message, DialResult):
            call = f"dial/{message.desk}/{message.request_id}"
        else:
            call = f"callback/{message.task_id}"
        return Item(delivery, message, None, call)

    def _deliver(self, item: Item) -> Result:
        assert item.message is not None
        ident = event_id(item.message)
        if self.breaker.paused or self.stop.is_set():
            return Result("held")
        if not self.order.may_try(item.call, ident):
            return Result("queued", reason="an earlier event of the call waits for its retry")
        rendered = self.formatter.render(item.message)
        if rendered is None:
            self.order.done(item.call, ident)
            return Result("skipped", reason=f"no {self.target.format} event for {item.delivery.routing_key}")
        headers = signature_headers(self.keys, ident, int(time.time()), rendered.body)
        headers["content-type"] = rendered.content_type
        result = self.sender.post(rendered.body, headers)
        self.stats.attempted(result)
        if result.verdict == "retry":
            self.order.waits(item.call, ident)
            if self.breaker.failed():
                self.stats.paused()
                logger.warning(
                    "webhook=%s paused after %d failures in a row (last: %s); resumes in %.0fs or on "
                    "tcx-bridge webhooks enable %s",
                    self.target.name, self.target.disable_after, result.reason, self.target.resume_after,
                    self.target.name,
                )  # fmt: skip
        else:
            self.order.done(item.call, ident)
            if result.verdict == "delivered":
                self.breaker.succeeded()
                self.stats.delivered(item.message.occurred_at)
        return result

    def _settle(self, broker: Broker, item: Item, result: Result | None) -> None:
        """Publish what a tried (or unreadable) delivery needs: nothing, its retry or its dead letter."""
        delivery = item.delivery
        attempts = attempts_of(delivery)
        if result is None:
            self._dead(broker, delivery, attempts, item.error or "unhandled")
            return
        outcome: str = result.verdict
        if result.verdict == "dead":
            self._dead(broker, delivery, attempts, f"{result.reason} (attempt {attempts})")
        elif result.verdict in ("retry", "queued"):
            outcome = self._retry_or_dead(broker, item, result, attempts)
        logger.info(
            "webhook=%s id=%s key=%s outcome=%s status=%s attempt=%d ms=%.1f",
            self.target.name, delivery.message_id, delivery.routing_key, outcome,
            result.status, attempts, result.seconds * 1000,
        )  # fmt: skip

    def _retry_or_dead(self, broker: Broker, item: Item, result: Result, attempts: int) -> str:
        delivery = item.delivery
        waiting = result.verdict == "queued"
        now_ms = int(time.time() * 1000)
        since = delivery.headers.get(SINCE)
        since = since if isinstance(since, int) and 0 < since <= now_ms else now_ms
        delay = retry_delay(self.target, attempts, result.retry_after)
        if not waiting and (now_ms - since) / 1000 + delay > self.target.retry_for:
            assert item.message is not None
            self.order.done(item.call, event_id(item.message))
            waited = (now_ms - since) / 1000
            reason = f"gave up after {waited:.1f}s and {attempts} attempt(s); last: {result.reason}"
            self._dead(broker, delivery, attempts, reason)
            return "dead-lettered"
        if waiting:  # queued behind its call's earlier event: not an attempt
            delay = min(self.target.retry_base, self.target.retry_max)
            attempts -= 1
        else:
            self.stats.retried()
        headers: dict[str, Any] = {ATTEMPTS: attempts, USER_ID: delivery.user_id or "", SINCE: since}
        broker.publish(
            self._retry,
            OutgoingMessage(
                routing_key=delivery.routing_key,
                body=delivery.body,
                message_id=delivery.message_id or "",
                type=delivery.type or "",
                timestamp=delivery.timestamp or int(time.time()),
                expiration_ms=int(delay * 1000),
                headers=headers,
            ),
        )
        return f"retry-in-{int(delay * 1000)}ms"

    def _dead(self, broker: Broker, delivery: Delivery, attempts: int, reason: str) -> None:
        broker.publish(self.settings.dead_exchange, dead_letter(delivery, self.name, attempts, reason))
        self.stats.dead_lettered(reason)
        logger.error(
            "webhook=%s dead-lettered id=%s key=%s: %s",
            self.target.name, delivery.message_id, delivery.routing_key, reason,
        )  # fmt: skip
