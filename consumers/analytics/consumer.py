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
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.config import Settings
from bridge.transport import Delivery
from consumers.analytics.calls import CallConsumer
from consumers.analytics.settings import ANALYTICS
from consumers.store.core import open_store


class Analytics(CallConsumer):
    """One record per call: ring and talk times, missed calls."""

    name = "analytics"
    batch_merge = True  # on_record does nothing that can fail

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.database = open_store(settings, "analytics", wait=True)
        self.service_level: float | None = ANALYTICS.of(settings).service_level_seconds

    def prepare(self, deliveries: Sequence[Delivery]) -> None:
        if self.service_level is not None:  # in the first batch's transaction (the store may start away)
            self.store.execute("UPDATE service_level SET seconds = ?", (self.service_level,))
            self.service_level = None
        super().prepare(deliveries)
