"""Every exchange, queue and binding tcx-bridge uses, declared idempotently.

    tcx.events    topic, durable, alternate-exchange tcx.unrouted   call.* and dial.* events
    tcx.unrouted  fanout, durable -> queue tcx.unrouted             events nobody was bound for yet
    tcx.commands  topic, durable                                    desk.<desk>.dial|popup, ext.<ext>.*
    tcx.dead      topic, durable -> queue tcx.dead.<consumer>       dead letters, routed by consumer
                  (x-message-ttl retention_dead: a dead letter is dropped that long after it arrived)
    tcx.retry.<consumer>  fanout -> queue tcx.<consumer>.retry      retries, written by that consumer alone
    tcx.again.<consumer>  fanout -> queue tcx.<consumer>            the retry queue's expired messages
    tcx.dial-results  stream queue, bound to dial.# on tcx.events   what ``dial --wait`` reads
    tcx.history   stream queue, bound to call.#, dial.#, callback.# on tcx.events: every event, kept
                  history_max_age,
                  what ``history``, ``consume --from``, ``store rebuild`` and the wallboard read

(``tcx`` is the namespace setting; the events exchange may be renamed on its own.)

The way back into a work queue is closed to every client: a consumer publishes
a message it will retry to its own retry exchange (only its own user may write
there; the broker checks the user_id it signs with), with the original routing
key and, in its own headers, the publisher's user_id and the tries, and without
any header a client wrote; the retry queue's per-message TTL dead-letters it to
its again exchange, which no user may write to, bound to the consumer's queue
alone. So a delivery through the again exchange whose user_id is the consumer's
own login carries headers only that consumer wrote. Work queues have no
dead-letter exchange at all: RabbitMQ before 4.0 crashes a classic queue that
dead-letters a message whose ``x-death`` header a client forged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from bridge.config import Settings
from bridge.errors import AccessRefusedError, BrokerRefusedError, BrokerRejectedError, TransportError
from bridge.events import FORGET_KEY
from bridge.transport import NOT_FOUND, PRECONDITION_FAILED, Broker, OutgoingMessage

DIAL_RESULTS_MAX_AGE = "1D"  # the dial-results stream keeps a day (dial --wait reads seconds of it)
DIAL_RESULTS_MAX_BYTES = 100_000_000
DIAL_RESULTS_SEGMENT_BYTES = 10_000_000  # retention drops whole segments: keep them small
HISTORY_SEGMENT_BYTES = 50_000_000  # the history's segments: a day of a busy PBX is a few of them
HISTORY_PATTERNS = ("call.#", "dial.#", "callback.#")  # every event key of the wire (bridge.events)


def dead_letter_key(consumer: str) -> str:
    """A consumer's routing key on the dead exchange (to its dead-letter queue, nowhere else)."""
    return consumer


def retry_exchange(settings: Settings, consumer: str) -> str:
    """Where the consumer publishes what it will retry (its own user alone may): on to its retry queue."""
    return f"{settings.namespace}.retry.{consumer}"


def again_exchange(settings: Settings, consumer: str) -> str:
    """Where the retry queue dead-letters what waited long enough: back to the consumer's queue."""
    return f"{settings.namespace}.again.{consumer}"


def dial_results_queue(settings: Settings) -> str:
    """The stream of dial results that ``dial --wait`` reads (no user needs a queue of its own)."""
    return f"{settings.namespace}.dial-results"


def declare_dial_results(broker: Broker, settings: Settings) -> None:
    """The dial-results stream, bound to every dial result; checked passively first."""
    queue = dial_results_queue(settings)
    if broker.queue_info(queue) is not None:
        return
    declare_events(broker, settings)
    try:
        broker.declare_queue(
            queue,
            arguments={
                "x-queue-type": "stream",
                "x-max-age": DIAL_RESULTS_MAX_AGE,
                "x-max-length-bytes": DIAL_RESULTS_MAX_BYTES,
                "x-stream-max-segment-size-bytes": DIAL_RESULTS_SEGMENT_BYTES,
            },
        )
    except BrokerRefusedError:
        raise BrokerRefusedError(
            f"queue {queue!r} does not exist and user {broker.username!r} may not declare it "
            "(no configure right on it); run tcx-bridge topology declare as an admin first"
        ) from None
    broker.bind_queue(queue, settings.exchange, "dial.#")


def history_queue(settings: Settings) -> str:
    """The stream every event is copied into by the broker (no process writes it): docs/history.md."""
    return f"{settings.namespace}.history"


def history_arguments(settings: Settings) -> dict[str, Any]:
    """The history stream's arguments: retention by age (and size, when history_max_bytes is set)."""
    arguments: dict[str, Any] = {
        "x-queue-type": "stream",
        "x-max-age": settings.history_max_age,
        "x-stream-max-segment-size-bytes": HISTORY_SEGMENT_BYTES,
    }
    if settings.history_max_bytes:
        # retention drops whole segments: a tenth of the limit keeps the stream within 10% of it
        segment = max(settings.history_max_bytes // 10, 10_000)
        arguments["x-max-length-bytes"] = settings.history_max_bytes
        arguments["x-stream-max-segment-size-bytes"] = min(HISTORY_SEGMENT_BYTES, segment)
    return arguments


def declare_history(broker: Broker, settings: Settings) -> None:
    """The history stream bound to every event key: the broker copies each event into it.

    Replicated on every node of a cluster (a stream's default). A stream declared
    before with other retention keeps its own: RabbitMQ refuses to change a queue's
    arguments (topology show says so; a policy changes them live).
    """
    queue = history_queue(settings)
    if broker.queue_info(queue) is None:
        broker.declare_queue(queue, arguments=history_arguments(settings))
    for pattern in HISTORY_PATTERNS:
        broker.bind_queue(queue, settings.exchange, pattern)


def declare_events(broker: Broker, settings: Settings) -> None:
    """Declare the events exchange with its alternate exchange and the unrouted queue.

    Checked passively first: when the events exchange exists (an admin's ``topology
    declare``, or an earlier process), nothing is declared, so a user without the
    configure right works; when it does not, such a user gets one line saying so.
    """
    if broker.exchange_exists(settings.exchange):
        return
    broker.ensure_exchange(settings.unrouted_exchange, "fanout")
    broker.declare_queue(
        settings.unrouted_exchange, arguments={"x-queue-type": "quorum"} if settings.quorum else None
    )
    broker.bind_queue(settings.unrouted_exchange, settings.unrouted_exchange, "")
    try:
        broker.ensure_exchange(
            settings.exchange, "topic", arguments={"alternate-exchange": settings.unrouted_exchange}
        )
    except BrokerRejectedError as error:
        # Someone declared it already with other arguments: use it as it is.
        if error.reply_code != PRECONDITION_FAILED:
            raise


def declare_commands(broker: Broker, settings: Settings) -> None:
    """Declare the commands exchange (dial requests and screen pops to desks), if it is not there."""
    broker.ensure_exchange(settings.commands_exchange, "topic")


def publish_event(broker: Broker, settings: Settings, message: OutgoingMessage) -> None:
    """Publish to the events exchange; declare the topology first if the exchange is missing.

    The fast path is one publish; a fresh broker costs one extra round of declares.
    """
    try:
        broker.publish(settings.exchange, message)
    except BrokerRejectedError as error:
        if error.reply_code != NOT_FOUND:
            raise
        declare_events(broker, settings)
        broker.publish(settings.exchange, message)


def publish_events(
    broker: Broker, settings: Settings, messages: list[OutgoingMessage]
) -> tuple[int, TransportError | None]:
    """Publish a window of events with pipelined confirms (an outbox replay); declare first if need be.

    Returns how many, from the first, were confirmed, and the error that stopped the rest.
    """
    confirmed, error = broker.publish_many(settings.exchange, messages)
    if isinstance(error, BrokerRejectedError) and error.reply_code == NOT_FOUND and confirmed == 0:
        declare_events(broker, settings)
        confirmed, error = broker.publish_many(settings.exchange, messages)
    return confirmed, error


class Binding(NamedTuple):
    """Bind a consumer's queue to exchange with pattern."""

    exchange: str
    pattern: str


class QueueSpec(NamedTuple):
    """One queue of a consumer: its name, arguments and bindings (exchange, kind, key)."""

    name: str
    arguments: dict[str, Any]
    bindings: tuple[tuple[str, str, str], ...]


def desk_queue_name(desk: str) -> str:
    """The desk agent's consumer name (its queue is ``<namespace>.desk.<desk>``)."""
    return f"desk.{desk}"


def desk_bindings(settings: Settings) -> list[Binding]:
    """What a desk agent's queue is bound to: its commands, and its own outbound call events."""
    found = [
        Binding(settings.commands_exchange, f"desk.{settings.desk}.*"),
        Binding(settings.commands_exchange, FORGET_KEY),  # erase a number in the desk's records
        # the Assistant's own outbound call events confirm a dial
        Binding(settings.exchange, f"call.started.outbound.{settings.desk}"),
        Binding(settings.exchange, f"call.ended.outbound.{settings.desk}"),
    ]
    if settings.extension:
        found += [
            Binding(settings.commands_exchange, f"ext.{settings.extension}.dial"),
            Binding(settings.commands_exchange, f"ext.{settings.extension}.popup"),
        ]
    return found


def consumer_queues(settings: Settings, name: str, bindings: Sequence[Binding]) -> list[QueueSpec]:
    """A consumer's queue, its retry queue and its dead-letter queue, with their bindings."""
    queue = settings.queue(name)
    retry, again = retry_exchange(settings, name), again_exchange(settings, name)
    # No dead-letter exchange on the work queue: RabbitMQ before 4.0 crashes a classic queue that
    # dead-letters a message whose x-death header a client forged. The runtime counts redeliveries
    # (quorum queues' x-delivery-count) and publishes retries itself.
    arguments = queue_type(settings)
    own = tuple((binding.exchange, "topic", binding.pattern) for binding in bindings)
    return [
        QueueSpec(
            settings.dead_queue(name),
            dead_queue_arguments(settings),
            ((settings.dead_exchange, "topic", dead_letter_key(name)),),
        ),
        QueueSpec(queue, arguments, ((again, "fanout", ""), *own)),
        QueueSpec(
            f"{queue}.retry",
            {"x-dead-letter-exchange": again, **queue_type(settings, dead_letters=True)},
            ((retry, "fanout", ""),),
        ),
    ]


def dead_queue_arguments(settings: Settings) -> dict[str, Any]:
    """A dead-letter queue's arguments: its type, and x-message-ttl from retention_dead (if set)."""
    arguments = queue_type(settings)
    if settings.retention_dead is not None:
        arguments["x-message-ttl"] = round(settings.retention_dead * 1000)
    return arguments


def declare_queues(broker: Broker, settings: Settings, name: str, bindings: Sequence[Binding]) -> None:
    """Check a consumer's queues passively; declare (idempotently) only what is missing, if the user may.

    A user without the configure right (every generated one) gets one line naming
    what is missing and the command an admin runs to declare it. A dead-letter
    queue that exists with another x-message-ttl (created before retention_dead
    changed) keeps it: a broker policy changes it (docs/privacy.md).
    """
    specs = consumer_queues(settings, name, bindings)
    exchanges = {(exchange, kind) for spec in specs for exchange, kind, _ in spec.bindings}
    missing = [f"queue {spec.name!r}" for spec in specs if broker.queue_info(spec.name) is None]
    missing += [f"exchange {name!r}" for name, _ in sorted(exchanges) if not broker.exchange_exists(name)]
    if not missing:
        try:  # an admin declared it all (bindings included); still, the arguments must be these
            for spec in specs:
                _declare(broker, spec)
        except AccessRefusedError:
            pass  # a user without the configure right checks existence only (topology show compares more)
        return
    try:
        for exchange, kind in sorted(exchanges):
            broker.ensure_exchange(exchange, kind)
        for spec in specs:
            _declare(broker, spec)
            for exchange, _, key in spec.bindings:
                broker.bind_queue(spec.name, exchange, key)
    except BrokerRefusedError:
        desk = f" --desk {name.removeprefix('desk.')}" if name.startswith("desk.") else ""
        raise BrokerRefusedError(
            f"{missing[0]} does not exist and user {broker.username!r} may not declare it "
            f"(no configure right on it); run tcx-bridge topology declare{desk} as an admin first"
        ) from None


_OTHER_TTL = re.compile(r"inequivalent arg 'x-message-ttl'.*current is (?:none|the value '(\d+)'|'(\d+)')")


def _declare(broker: Broker, spec: QueueSpec) -> None:
    """Declare one queue; one that exists with another x-message-ttl is declared again with its own."""
    try:
        broker.declare_queue(spec.name, arguments=spec.arguments)
    except BrokerRefusedError as error:
        other = _OTHER_TTL.search(str(error))
        if other is None or ("x-message-ttl" not in spec.arguments and not any(other.groups())):
            raise
        arguments = {key: value for key, value in spec.arguments.items() if key != "x-message-ttl"}
        if any(other.groups()):
            arguments["x-message-ttl"] = int(other.group(1) or other.group(2))
        broker.declare_queue(spec.name, arguments=arguments)  # a type mismatch is still an error


def queue_type(settings: Settings, *, dead_letters: bool = False) -> dict[str, Any]:
    """Queue arguments: a quorum queue with the quorum setting; dead_letters: they move at least once.

    Quorum queues dead-letter at most once unless asked; ``at-least-once`` (which
    needs ``x-overflow: reject-publish``) keeps a retry or a dead letter from being
    lost when a node fails while moving it.
    """
    if not settings.quorum:
        return {}
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    if dead_letters:
        arguments |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    return arguments
