"""The whole topology: every exchange, queue, binding and dead-letter route, declared or listed.

``tcx-bridge topology declare`` (an admin, at roll-out) is idempotent and safe on
a live system: every declaration matches what the running components check. The
consumers come from the entry points ``tcx_bridge.consumers`` (each class's
``name_for`` and ``bindings``), the desk agents from ``--desk``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import msgspec

from bridge.access import check_unique, parse_desk
from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.history import stream_head, stream_tail
from bridge.plugins import CONSUMERS, load, registered
from bridge.topology import (
    Binding,
    again_exchange,
    declare_commands,
    declare_dial_results,
    declare_events,
    declare_history,
    declare_queues,
    desk_bindings,
    desk_queue_name,
    dial_results_queue,
    history_queue,
    retry_exchange,
)
from bridge.transport import Broker


class ConsumerKind(Protocol):
    """What the topology needs of a consumer class: its name and its bindings."""

    def name_for(self, settings: Settings) -> str: ...
    def bindings(self, settings: Settings) -> Sequence[Binding]: ...


class Entity(NamedTuple):
    """One thing on the broker: an exchange or a queue (stream: a stream queue), and what it is for."""

    kind: str
    name: str
    about: str
    stream: bool = False


def consumer_kinds() -> list[ConsumerKind]:
    """Every registered consumer class that loads (one that does not is left out: consume --list says why)."""
    found = []
    for point in registered(CONSUMERS).values():
        try:
            found.append(load(point, "consumer"))
        except ConfigError:
            continue
    return found  # type: ignore[return-value]  # entry points name Consumer subclasses


def kind_queues(kind: ConsumerKind, settings: Settings) -> list[tuple[str, Sequence[Binding]]]:
    """A consumer's queues: its ``queues(settings)`` (one per target for webhooks), else its one queue."""
    many = getattr(kind, "queues", None)
    if many is None:
        return [(kind.name_for(settings), kind.bindings(settings))]
    return list(many(settings))


def desk_settings(settings: Settings, desks: list[str]) -> list[Settings]:
    """Each desk's settings from ``DESK`` or ``DESK,EXTENSION``: its own extension, never the caller's.

    (The caller's extension once bound ``ext.<its extension>.*`` to every desk's queue,
    so a dial by extension rang on every desk declared.)
    """
    parsed = [parse_desk(text) for text in desks]
    check_unique(parsed)
    return [msgspec.structs.replace(settings, desk=d.desk, extension=d.extension) for d in parsed]


def queues(settings: Settings, desks: list[str]) -> list[tuple[Settings, str, Sequence[Binding]]]:
    """(settings, consumer name, bindings) of every consumer and of each desk's agent."""
    found = [
        (settings, name, bound) for kind in consumer_kinds() for name, bound in kind_queues(kind, settings)
    ]
    for of_desk in desk_settings(settings, desks):
        found.append((of_desk, desk_queue_name(of_desk.desk), desk_bindings(of_desk)))
    return found


def declare_all(broker: Broker, settings: Settings, desks: list[str]) -> None:
    """Declare everything; desk agent queues for each of desks (``DESK`` or ``DESK,EXTENSION``)."""
    desk_settings(settings, desks)  # a bad or repeated desk stops before anything is declared
    declare_events(broker, settings)
    declare_commands(broker, settings)
    declare_dial_results(broker, settings)
    declare_history(broker, settings)
    for own, name, bindings in queues(settings, desks):
        declare_queues(broker, own, name, bindings)


def expected(settings: Settings, desks: list[str]) -> list[Entity]:
    """Everything declare_all declares, in order."""
    found = [
        Entity("exchange", settings.exchange, "topic: call.* and dial.* events"),
        Entity("exchange", settings.unrouted_exchange, "fanout: alternate exchange of the events"),
        Entity("queue", settings.unrouted_exchange, "events no consumer was bound for"),
        Entity("exchange", settings.commands_exchange, "topic: desk.<desk>.dial|popup, ext.<ext>.*"),
        Entity("exchange", settings.dead_exchange, "topic: dead letters, by consumer"),
        Entity("queue", dial_results_queue(settings), "the dial results dial --wait reads", stream=True),
        Entity("queue", history_queue(settings), "every event, kept history_max_age", stream=True),
    ]
    for _, name, _ in queues(settings, desks):
        found += [
            Entity("queue", settings.queue(name), f"consumer {name}"),
            Entity("queue", f"{settings.queue(name)}.retry", f"retries of {name}, back after a delay"),
            Entity("queue", settings.dead_queue(name), f"dead letters of {name}"),
            Entity("exchange", retry_exchange(settings, name), f"fanout: what {name} rejects, to retry"),
            Entity("exchange", again_exchange(settings, name), f"fanout: {name}'s retries back to its queue"),
        ]
    return found


def inspect(broker: Broker, entities: list[Entity]) -> list[tuple[Entity, str]]:
    """Each entity with what the broker says of it: missing, or exists (a queue with messages and
    consumers; a stream with the offsets it keeps)."""
    rows = []
    for entity in entities:
        if entity.kind == "exchange":
            rows.append((entity, "exists" if broker.exchange_exists(entity.name) else "MISSING"))
            continue
        info = broker.queue_info(entity.name)
        if info is None:
            rows.append((entity, "MISSING"))
        elif entity.stream:
            rows.append((entity, stream_state(broker, entity.name)))
        else:
            rows.append((entity, f"{info[0]} ready, {info[1]} consumer(s)"))
    return rows


def stream_state(broker: Broker, queue: str) -> str:
    """``stream: offsets A..B (N events kept)`` or ``stream: empty``. A is what a reader at first gets,
    B the last offset: two short reads (the last chunk, one message), never the whole stream.

    A passive declare says nothing of a stream: 0 messages and 0 consumers (RabbitMQ 3.10), even while
    readers read it, so no consumer count is shown (``rabbitmqctl list_queues name consumers`` has it).
    """
    tail = stream_tail(broker, queue)
    head = None if tail is None else stream_head(broker, queue)
    if tail is None or head is None or head > tail:
        return "stream: empty"
    return f"stream: offsets {head}..{tail} ({tail - head + 1} events kept)"
