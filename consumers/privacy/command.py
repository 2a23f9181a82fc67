"""The ``privacy.forget`` command: published by ``tcx-bridge privacy forget``, acted on everywhere.

Every consumer's queue and every desk agent's queue is bound to ``privacy.forget``
on the commands exchange. A request is believed only from what the broker vouches
for: it came through the commands exchange with that routing key (which the
generated rights let only ``tcx-privacy`` and ``tcx-admin`` publish) and is
signed with a ``user_id`` that is not a desk's (a desk user may never ask).
Each receiver erases the number in what only it holds (its store, its data
dir's outbox and logs; a desk agent its dial records) and records it in its own
audit trail.
"""

from __future__ import annotations

import logging
from typing import Any

from bridge import events
from bridge.access import desk_of_user
from bridge.config import Settings
from bridge.envelope import build_outgoing
from bridge.errors import HandlerError
from bridge.transport import Broker
from consumers.privacy import audit, files, stores
from consumers.privacy.forms import Forms, forms_of, key_of
from consumers.store.core import Store

logger = logging.getLogger(__name__)


def publish(settings: Settings, forms: Forms) -> str:
    """Publish the forget request for the number (signed, confirmed); its request id."""
    request = events.ForgetRequest(
        request_id=events.new_event_id(),
        number=forms.e164 or forms.given,
        requested_by=audit.os_user(),
        requested_at=events.utc_now(),
    )
    message = build_outgoing(
        request,
        routing_key=events.FORGET_KEY,
        message_id=request.request_id,
        type="privacy.forget",
        app_id="tcx-bridge",
    )
    with Broker(settings.amqp_url, ca_file=settings.ca_file, sign=True) as broker:
        broker.publish(settings.commands_exchange, message)
    return request.request_id


def is_forget(settings: Settings, exchange: str, routing_key: str) -> bool:
    return exchange == settings.commands_exchange and routing_key == events.FORGET_KEY


def decode(body: bytes, user_id: str | None) -> events.ForgetRequest:
    """The request, if the broker vouches for a sender who may ask (never a desk); else HandlerError."""
    if desk_of_user(user_id) is not None:
        raise HandlerError(f"spoofed: a privacy.forget from desk user {user_id!r}; only tcx-privacy may ask")
    return events.FORGET_DECODER.decode(body)


def act(
    settings: Settings, request: events.ForgetRequest, user_id: str | None, store: Store | None, **extra: Any
) -> dict[str, int]:
    """Erase the number in store (if any) and in the data dir's files; audited. Rows per place."""
    forms = forms_of(request.number, settings.region, key_of(settings.data_dir))
    counts: dict[str, int] = {}
    if store is not None:
        counts |= {f"{store.name}/{table}": rows for table, rows in stores.erase(store, forms).items()}
    for name, erase in extra.items():
        found = erase(forms)
        if found:
            counts[name] = found
    counts |= files.erase(settings, forms)
    audit.record(
        settings.data_dir,
        "forget-request",
        broker_user=user_id,
        number_hash=sorted(forms.hashes)[0],
        places=counts,
        request_id=request.request_id,
    )
    logger.info("privacy.forget %s from %s: %s", request.request_id, user_id, counts or "nothing held")
    return counts


def is_request(message: object) -> bool:
    """A decoded privacy.forget (the runner's own message, never the consumer's: never prepared)."""
    return isinstance(message, events.ForgetRequest)
