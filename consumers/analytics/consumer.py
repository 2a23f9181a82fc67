"""The analytics consumer: one record per call, in table ``calls`` of its store.

``tcx-bridge consume analytics``; queue ``tcx.analytics`` bound to
``call.started.#``, ``call.connected.#`` and ``call.ended.#``. The record is
merged from the events by ``occurred_at`` (see consumers.analytics.calls), and the event id
is recorded in the same transaction, so a duplicate changes nothing.

The store is ``<data_dir>/analytics.sqlite3``, or the PostgreSQL database of
``store_url``, where any number of replicas may share the queue: each batch is
merged at once under the locks of its call keys (consumers.analytics.calls.merge_batch).
The view ``calls_daily`` (docs/store.md) counts the service level against
``service_level_seconds``, which the consumer writes to its store at start.

With ``analytics_numbers = "hashed"`` a caller id is kept as ``#`` and a keyed hash
of its E.164 form (consumers.privacy.forms): the same caller, however dialled, has
the same hash, so repeat callers still count; internal extensions and anonymous
callers stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from bridge.config import Settings
from bridge.transport import Delivery
from consumers.analytics.calls import CallConsumer
from consumers.analytics.settings import ANALYTICS
from consumers.numbers import normalise
from consumers.privacy.forms import key_of, number_hash
from consumers.privacy.settings import options_of
from consumers.store.core import open_store


class Analytics(CallConsumer):
    """One record per call: ring and talk times, missed calls."""

    name = "analytics"
    batch_merge = True  # on_record does nothing that can fail

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.database = open_store(settings, "analytics", wait=True)
        self.service_level: float | None = ANALYTICS.of(settings).service_level_seconds
        hashed = options_of(settings).analytics_numbers == "hashed"
        self.key = key_of(settings.data_dir) if hashed else None

    def decode(self, body: bytes, routing_key: str) -> Any:
        event = super().decode(body, routing_key)
        if self.key is None or event.caller_id is None:
            return event
        number = normalise(event.caller_id, self.settings.region)
        if number.kind in ("internal", "anonymous"):
            return event
        kept = number.e164 or "".join(char for char in event.caller_id if char.isdigit())
        return msgspec.structs.replace(event, caller_id=number_hash(self.key, kept))

    def prepare(self, deliveries: Sequence[Delivery]) -> None:
        if self.service_level is not None:  # in the first batch's transaction (the store may start away)
            self.store.execute("UPDATE service_level SET seconds = ?", (self.service_level,))
            self.service_level = None
        super().prepare(deliveries)
