"""Every exchange, queue and binding tcx-bridge uses, declared idempotently.

    tcx.events    topic, durable, alternate-exchange tcx.unrouted   call.* and dial.* events
    tcx.unrouted  fanout, durable -> queue tcx.unrouted             events nobody was bound for yet
    tcx.commands  topic, durable                                    desk.<desk>.dial|popup, ext.<ext>.*
    tcx.dead      topic, durable -> queue tcx.dead.<consumer>       dead letters, routed by consumer

(``tcx`` is the namespace setting; the events exchange may be renamed on its own.)
"""

from __future__ import annotations

from bridge.config import Settings
from bridge.errors import BrokerRejectedError, TransportError
from bridge.transport import NOT_FOUND, PRECONDITION_FAILED, Broker, OutgoingMessage


def dead_letter_keys(consumer: str) -> tuple[str, str, str]:
    """A consumer's routing keys on the dead exchange: to its dead letters, its retry queue, its queue.

    Retries go this way too, so no consumer needs to publish to ``amq.default``
    (which reaches every queue by name).
    """
    return consumer, f"{consumer}.retry", f"{consumer}.again"


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
