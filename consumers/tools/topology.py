"""The whole topology: every exchange, queue, binding and dead-letter route, declared or checked.

``tcx-bridge topology declare`` is idempotent and safe on a live system: every
declaration matches what the running components declare themselves.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from bridge.config import Settings
from bridge.topology import (
    again_exchange,
    declare_commands,
    declare_dial_results,
    declare_events,
    dial_results_queue,
    retry_exchange,
)
from bridge.transport import Broker
from consumers.agent.consumer import DeskAgent
from consumers.runtime.plugins import consumer_classes
from consumers.runtime.runner import declare_consumer_queues


class Entity(NamedTuple):
    """One thing on the broker: an exchange or a queue, and what it is for."""

    kind: str
    name: str
    about: str


def desk_settings(settings: Settings, desks: list[str]) -> list[Settings]:
    return [msgspec.structs.replace(settings, desk=desk) for desk in desks]


def declare_all(broker: Broker, settings: Settings, desks: list[str]) -> None:
    """Declare everything; desk agent queues for each of desks."""
    declare_events(broker, settings)
    declare_commands(broker, settings)
    declare_dial_results(broker, settings)
    for consumer in consumer_classes():
        declare_consumer_queues(broker, settings, consumer)
    for desk in desk_settings(settings, desks):
        declare_consumer_queues(broker, desk, DeskAgent)


def expected(settings: Settings, desks: list[str]) -> list[Entity]:
    """Everything declare_all declares, in order."""
    found = [
        Entity("exchange", settings.exchange, "topic: call.* and dial.* events"),
        Entity("exchange", settings.unrouted_exchange, "fanout: alternate exchange of the events"),
        Entity("queue", settings.unrouted_exchange, "events no consumer was bound for"),
        Entity("exchange", settings.commands_exchange, "topic: desk.<desk>.dial|popup, ext.<ext>.*"),
        Entity("exchange", settings.dead_exchange, "topic: dead letters, by consumer"),
        Entity("queue", dial_results_queue(settings), "stream: the dial results dial --wait reads"),
    ]
    names = [c.name_for(settings) for c in consumer_classes()]
    names += [DeskAgent.name_for(desk) for desk in desk_settings(settings, desks)]
    for name in names:
        found += [
            Entity("queue", settings.queue(name), f"consumer {name}"),
            Entity("queue", f"{settings.queue(name)}.retry", f"retries of {name}, back after a delay"),
            Entity("queue", settings.dead_queue(name), f"dead letters of {name}"),
            Entity("exchange", retry_exchange(settings, name), f"fanout: what {name} rejects, to retry"),
            Entity("exchange", again_exchange(settings, name), f"fanout: {name}'s retries back to its queue"),
        ]
    return found


def inspect(broker: Broker, entities: list[Entity]) -> list[tuple[Entity, str]]:
    """Each entity with what the broker says of it: missing, or exists (with messages and consumers)."""
    rows = []
    for entity in entities:
        if entity.kind == "exchange":
            rows.append((entity, "exists" if broker.exchange_exists(entity.name) else "MISSING"))
            continue
        info = broker.queue_info(entity.name)
        rows.append((entity, "MISSING" if info is None else f"{info[0]} ready, {info[1]} consumer(s)"))
    return rows
