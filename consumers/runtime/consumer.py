"""The interface every consumer implements (``Consumer``) and what its handler is given (``Context``).

A plugin needs only these two and ``Binding`` (all three from ``consumers.runtime``);
the runner (consumers.runtime.runner) calls the hooks in this order for a batch:
``decode`` once for each delivery, ``prepare`` once (with the decoded messages, a
``Batch``), then ``handle`` for each message, ``refuse`` for one about to be
dead-lettered; ``tick`` between deliveries (and ``sweep`` once a day: retention), ``forget`` for a
``privacy.forget`` command after its batch committed, ``close`` at the end.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from bridge.config import Settings
from bridge.events import ForgetRequest
from bridge.topology import Binding, declare_events
from bridge.transport import Broker, Delivery, OutgoingMessage
from consumers.privacy import command
from consumers.privacy.settings import options_of
from consumers.privacy.sweep import sweep_store
from consumers.runtime.metrics import NULL, Metrics
from consumers.store.core import Store, as_store

logger = logging.getLogger(__name__)


class Context(NamedTuple):
    """What a handler may use besides the message: settings, the delivery, and publish.

    publish(exchange, message) returns False when the broker returned the message
    as unroutable (it was kept in the unrouted exchange instead).
    """

    settings: Settings
    delivery: Delivery
    routing_key: str
    publish: Callable[[str, OutgoingMessage], bool]


class Batch(list[Delivery]):
    """The deliveries of one batch, with each message as decode() read it, for prepare().

    ``decoded`` maps a delivery tag to its message, for every delivery the broker
    vouched for and decode() read; the others are never handled (they are
    dead-lettered or retried at their turn). A Batch is a list of the deliveries,
    so a prepare() written for a plain list keeps working.
    """

    def __init__(self, deliveries: Iterable[Delivery] = (), decoded: Mapping[int, Any] | None = None) -> None:
        super().__init__(deliveries)
        self.decoded: dict[int, Any] = dict(decoded or {})


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
    def queues(cls, settings: Settings) -> list[tuple[str, Sequence[Binding]]]:
        """Every queue of this consumer, (its name, its bindings), for topology declare: one by default."""
        return [(cls.name_for(settings), cls.bindings(settings))]

    def make_runner(
        self, settings: Settings, *, max_messages: int | None = None, idle_exit: float | None = None
    ) -> Any:
        """What ``tcx-bridge consume NAME`` runs (install_signal_handlers(), run()): the shared Runner."""
        from consumers.runtime.runner import Runner  # the runner imports this module

        return Runner(self, settings, max_messages=max_messages, idle_exit=idle_exit)

    @classmethod
    def declare(cls, broker: Broker, settings: Settings) -> None:
        """Declare the exchanges this consumer binds to (the events exchange by default)."""
        declare_events(broker, settings)

    def decode(self, body: bytes, routing_key: str) -> Any:
        """Decode a body; msgspec's DecodeError or ValidationError dead-letter it."""
        raise NotImplementedError

    def prepare(self, deliveries: Sequence[Delivery]) -> None:
        """Work for the whole batch, in its transaction, before the messages are handled (default: none).

        The runner passes a Batch: ``deliveries.decoded`` holds the messages decode()
        returned (each is decoded once, and the same object goes to handle()). If
        it raises, its work is rolled back and the messages are handled one by one.
        """

    def handle(self, message: Any, context: Context) -> str:
        """Handle one decoded message; return the outcome for the log line."""
        raise NotImplementedError

    def settled(self, delivery: Delivery) -> bool:
        """True when prepare() already did this message's store work and handle() writes nothing for it:
        the runner then spares it a savepoint of its own (default: False, every message gets one)."""
        return False

    def refuse(self, delivery: Delivery, context: Context, reason: str) -> None:
        """A message about to be dead-lettered (spoofed, oversize, undecodable, a bug): tell whoever waits
        for an answer (default: nobody). Runs once per dead letter, before it is published."""

    def tick(self, broker: Broker, settings: Settings) -> None:
        """Periodic work between deliveries (default: none)."""

    def forget(self, settings: Settings, request: ForgetRequest, user_id: str | None) -> dict[str, int]:
        """Erase a number in what this consumer holds (a ``privacy.forget`` command, after its batch
        committed): by default its store and its data dir's outbox and logs. Rows per place."""
        return command.act(settings, request, user_id, as_store(self.database))

    def sweep(self, settings: Settings) -> dict[str, int]:
        """Apply this consumer's retention (once a day, between deliveries): its store's old rows."""
        store = as_store(self.database)
        if store is None:
            return {}
        swept = sweep_store(store, self.name, options_of(settings))
        if swept:
            logger.info("consumer=%s retention deleted %s", self.name, swept)
        return swept

    def close(self) -> None:
        """Release what the consumer holds (stores)."""
