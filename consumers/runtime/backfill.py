"""Backfill: a consumer reads the history stream from a point, then goes on with its live queue.

``tcx-bridge consume NAME --from first|<RFC 3339 time>|<offset>``. The path:

1. the runner declares (checks) the consumer's queue first: from then on the live
   queue collects every event, while the backfill runs;
2. the backfill finds the stream's tail (its last offset now), then reads the
   history (``<namespace>.history``) from the origin, or from the offset its store
   recorded for that origin (an interrupted backfill resumes there);
3. each batch keeps the events the consumer's bindings would have routed to it and
   goes through the runner's own batch (decode, vouch, handle, idempotent by event
   id); the next offset is written in the same transaction: that offset, not the
   stream's ack, says what is done (a stream's ack is only its credit, so the
   deliveries are acked as they arrive and the broker keeps sending while a batch
   is handled);
4. past the tail it records the origin as done and the runner consumes the live
   queue: what arrived meanwhile is there (no gap), and what both gave the consumer
   is a duplicate its event ids drop (no double effect).

Killed during 2-3, the same command resumes from the recorded offset; killed after
4, the origin is done and it goes straight to the live queue. A consumer without a
store (``Consumer.database``) records nothing: it starts from the origin again.
Offsets live in the table ``stream_offsets`` (consumer, origin: the --from text).
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime

from bridge.errors import BrokerRefusedError
from bridge.history import Offset, offset_of, stream_argument, stream_tail
from bridge.topology import Binding, history_queue
from bridge.transport import Broker, Delivery
from consumers.runtime.runner import Runner
from consumers.store.core import Store, as_store, transaction

logger = logging.getLogger(__name__)


def topic_matches(pattern: str, key: str) -> bool:
    """Whether an AMQP topic pattern (``*`` one word, ``#`` any number) matches a routing key."""
    return _matches(tuple(pattern.split(".")), tuple(key.split(".")))


@functools.lru_cache(maxsize=4096)
def _matches(pattern: tuple[str, ...], key: tuple[str, ...]) -> bool:
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_matches(rest, key[at:]) for at in range(len(key) + 1))
    return bool(key) and head in ("*", key[0]) and _matches(rest, key[1:])


class Backfill:
    """Reads the history into a runner's consumer from origin, then lets it go live (see the module)."""

    def __init__(self, runner: Runner, origin: Offset, origin_text: str, *, required: bool = True) -> None:
        """required: without the history stream, stop with one line (else: log it and go live)."""
        self.runner = runner
        self.settings = runner.settings
        self.origin = origin
        self.key = origin_text.strip()
        self.name = runner.consumer.name
        self.queue = history_queue(self.settings)
        self.patterns = [
            binding.pattern
            for binding in runner.consumer.bindings(self.settings)
            if isinstance(binding, Binding) and binding.exchange == self.settings.exchange
        ]
        self._wanted: dict[str, bool] = {}  # routing key -> whether the bindings route it here
        self.tail: int | None = None
        self.done = False
        self.read = 0  # history messages read by this process
        self.required = required
        runner.before_live = self.run

    def wanted(self, routing_key: str) -> bool:
        found = self._wanted.get(routing_key)
        if found is None:
            if len(self._wanted) >= 4096:  # keys carry desks: bounded
                self._wanted.clear()
            found = self._wanted[routing_key] = any(
                topic_matches(pattern, routing_key) for pattern in self.patterns
            )
        return found

    def run(self, broker: Broker) -> None:
        """Read the history up to its tail (unless this origin is done), with the runner's batches."""
        store = as_store(self.runner.consumer.database)
        self._settle(store)  # run again after a reconnect: the COMMIT the last run left behind first
        if self.done:
            return
        recorded = self._recorded(store)
        if recorded is not None and recorded[1]:
            logger.info("consumer=%s backfill from %s was done before: live queue", self.name, self.key)
            self.done = True
            return
        if broker.queue_info(self.queue) is None:
            problem = f"the history stream {self.queue!r} does not exist; run tcx-bridge topology declare"
            if self.required:
                raise BrokerRefusedError(problem)
            logger.warning("consumer=%s %s: no backfill", self.name, problem)
            self.done = True
            return
        start = stream_argument(self.origin) if recorded is None else recorded[0]
        self.tail = stream_tail(broker, self.queue)
        if self.tail is None or (isinstance(start, int) and start > self.tail):
            self._finish(store, start if isinstance(start, int) else 0)
            return
        logger.info(
            "consumer=%s backfill from %s (offset %s) up to offset %d",
            self.name,
            self.key,
            f"{start:%Y-%m-%dT%H:%M:%SZ}" if isinstance(start, datetime) else start,  # as the stream reads it
            self.tail,
        )
        broker.consume(  # acked as they arrive (a stream's ack is its credit): the committed offset counts
            self.queue,
            self._on_batch,
            prefetch=self.settings.prefetch,
            arguments={"x-stream-offset": start},
            should_stop=lambda: self.done or self.runner.stopping,
            ack_on_receipt=True,
        )
        self._settle(store)  # the last batch's COMMIT, left to finish behind: done before the live queue
        if self.done:
            logger.info("consumer=%s backfill done (%d read): live queue", self.name, self.read)

    def _settle(self, store: Store | None) -> None:
        """Wait for the COMMIT a batch left behind; one that failed undoes ``done`` (its batch may have
        recorded it): the next run reads again from the offset the store holds."""
        if store is None:
            return
        try:
            store.settle()
        except BaseException:
            self.done = False
            raise

    def _on_batch(self, deliveries: list[Delivery]) -> None:
        if self.runner.stopping or self.done:
            return  # left unacked; a stream forgets them with the channel
        assert self.tail is not None
        last = offset_of(deliveries[-1])
        finished = last >= self.tail
        wanted = [delivery for delivery in deliveries if self.wanted(delivery.routing_key)]
        store = as_store(self.runner.consumer.database)
        went: list[bool] = []  # whether the batch went through (the runner skips it once stopping)

        def record(in_store: Store | None) -> None:
            self._record(in_store, next_offset=last + 1, done=finished)
            went.append(True)

        self.runner.in_batch = record
        try:
            if wanted:
                self.runner._on_batch(wanted)  # the offset is committed with the batch's work
            else:
                with transaction(store, behind=True):
                    record(store)
        finally:
            self.runner.in_batch = None
        if not went:
            return  # stopped before it began: nothing of it was done
        self.read += len(deliveries)
        self.done = finished
        counted = ", ".join(f"{outcome}={count}" for outcome, count in sorted(self.runner.outcomes.items()))
        logger.info(  # one line a batch: the events' own lines are at DEBUG (failures stay at INFO)
            "consumer=%s backfill offsets %d..%d: %d read, %d for it%s",
            self.name,
            offset_of(deliveries[0]),
            last,
            len(deliveries),
            len(wanted),
            f": {counted}" if wanted else "",
        )

    def _finish(self, store: Store | None, next_offset: int) -> None:
        with transaction(store):
            self._record(store, next_offset=next_offset, done=True)
        self.done = True
        logger.info("consumer=%s backfill from %s: nothing to read: live queue", self.name, self.key)

    def _recorded(self, store: Store | None) -> tuple[int, bool] | None:
        if store is None:
            return None
        row = store.execute(
            "SELECT next_offset, done FROM stream_offsets WHERE consumer = ? AND origin = ?",
            (self.name, self.key),
        ).fetchone()
        return None if row is None else (int(row["next_offset"]), bool(row["done"]))

    def _record(self, store: Store | None, *, next_offset: int, done: bool) -> None:
        if store is None:
            return
        store.execute(
            "INSERT INTO stream_offsets (consumer, origin, next_offset, done) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (consumer, origin) DO UPDATE SET next_offset = excluded.next_offset, "
            "done = excluded.done",
            (self.name, self.key, next_offset, done),
        )
