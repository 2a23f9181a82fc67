"""What the ``webhooks`` commands do, without click: list, test, replay.

``replay`` moves a target's dead letters back into its queue the way the runtime
moves a retry (consumers.runtime.failures): published to the target's own retry
exchange with a TTL of 0, so the broker dead-letters it at once through the
again exchange into the queue. Run as ``tcx-webhooks`` (the user whose retries the
consumer believes), each keeps the user_id the broker vouched for when it first
came; its tries start again from 1.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from bridge.config import Settings
from bridge.events import CallEvent, utc_now
from bridge.topology import retry_exchange
from bridge.transport import Broker, OutgoingMessage
from consumers.runtime.failures import ATTEMPTS, ROUTING_KEY, USER_ID
from consumers.webhooks.delivery import Result, Sender
from consumers.webhooks.formats import Formatter, event_id
from consumers.webhooks.settings import WEBHOOKS, Target, WebhooksOptions, secrets_of
from consumers.webhooks.signing import key_of, signature_headers
from consumers.webhooks.state import read_state
from consumers.webhooks.worker import consumer_name


class Row(NamedTuple):
    """One line of ``webhooks list``."""

    name: str
    format: str
    url: str
    state: str
    backlog: str
    dead: str
    last_status: str


def shown_url(url: str) -> str:
    """scheme://host[:port]/… : a path may hold a token (Zammad's does)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{'/…' if parts.path.strip('/') else '/'}"


def rows(settings: Settings, broker: Broker | None) -> list[Row]:
    """Every configured target with the state the consumer last wrote and its queues' depths."""
    options: WebhooksOptions = WEBHOOKS.of(settings)
    written = read_state(settings.data_dir).get("targets", {})
    found = []
    for target in options.webhooks:
        seen: dict[str, Any] = written.get(target.name, {})
        backlog = dead = "?"
        if broker is not None:
            info = broker.queue_info(settings.queue(consumer_name(target)))
            backlog = "missing" if info is None else str(info[0])
            dead_info = broker.queue_info(settings.dead_queue(consumer_name(target)))
            dead = "missing" if dead_info is None else str(dead_info[0])
        state = seen.get("state", "not running here")
        if state == "paused" and seen.get("paused_until"):
            state = f"paused ({max(seen['paused_until'] - time.time(), 0):.0f}s left)"
        found.append(
            Row(
                target.name,
                target.format,
                shown_url(target.url),
                state,
                backlog,
                dead,
                seen.get("last_status", ""),
            )
        )
    return found


def sample_event(settings: Settings) -> CallEvent:
    """The event ``webhooks test`` sends: an inbound call starting at desk ``test``."""
    return CallEvent(
        event_id=f"test-{uuid.uuid4()}",
        kind="started",
        direction="inbound",
        call_id=f"test-{uuid.uuid4().hex[:12]}",
        caller_id="+15555550100",
        desk="test",
        extension="100",
        occurred_at=utc_now(),
        argv=("/N:S", "/C:+15555550100", "/T:I", "/I:test"),
    )


def send_test(settings: Settings, target: Target) -> Result:
    """One signed sample event to the target, now."""
    options: WebhooksOptions = WEBHOOKS.of(settings)
    message = sample_event(settings)
    rendered = Formatter(target.format, settings.namespace, options.webhook_agents).render(message)
    assert rendered is not None  # every format has a body for a call start
    keys = tuple(key_of(secret) for secret in secrets_of(target))
    headers = signature_headers(keys, event_id(message), int(time.time()), rendered.body)
    headers["content-type"] = rendered.content_type
    sender = Sender(target)
    try:
        return sender.post(rendered.body, headers)
    finally:
        sender.close()


def replay(broker: Broker, settings: Settings, target: Target, limit: int | None = None) -> int:
    """Move the target's dead letters there now back into its queue (oldest first); how many."""
    name = consumer_name(target)
    queue, exchange = settings.dead_queue(name), retry_exchange(settings, name)
    info = broker.queue_info(queue)
    waiting = info[0] if info else 0  # those there now: one that fails again comes back behind them
    limit = waiting if limit is None else min(limit, waiting)
    moved = 0
    while moved < limit:
        letter = broker.get(queue, timeout=0.5, ack=False)  # acked once it is back in the queue
        if letter is None:
            break
        key = letter.headers.get(ROUTING_KEY)
        user = letter.headers.get(USER_ID)
        broker.publish(
            exchange,
            OutgoingMessage(
                routing_key=key if isinstance(key, str) and key else letter.routing_key,
                body=letter.body,
                message_id=letter.message_id or "",
                type=letter.type or "",
                timestamp=letter.timestamp or int(time.time()),
                expiration_ms=0,
                headers={ATTEMPTS: 0, USER_ID: user if isinstance(user, str) else ""},
            ),
        )
        broker.ack(letter.delivery_tag)
        moved += 1
    return moved
