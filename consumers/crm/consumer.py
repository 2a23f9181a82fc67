"""The CRM consumer: screen pops by caller id, and the call journal.

``tcx-bridge consume crm``; queue ``tcx.crm`` bound to ``call.started.#``,
``call.connected.#`` and ``call.ended.#``.

* On an inbound ``started`` event it looks the caller up (E.164, region
  setting; internal and anonymous callers are not looked up) and publishes a
  screen pop to ``tcx.commands`` with routing key ``desk.<desk>.popup`` and an
  AMQP expiration of ``popup_ttl``. An event older than that (an outbox replay)
  gets no pop: it would be useless.
* When a call has ended it writes the journal entry: table ``journal`` of its
  store (``<data_dir>/crm.sqlite3``, or PostgreSQL), or an HTTP POST to ``crm_journal_url`` (with an
  ``Idempotency-Key`` header). A late event of an ended call rewrites the entry.

Everything happens in one store transaction with the event id, so a redelivery
or duplicate changes nothing; a failure (CRM down) rolls back and the runtime
retries the event later.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from bridge import events
from bridge.config import Settings
from bridge.envelope import build_outgoing
from bridge.topology import declare_commands, declare_events
from bridge.transport import Broker
from consumers.analytics.calls import CallConsumer, other_party
from consumers.crm.contacts import ContactLookup, HttpContacts, open_contacts, request_json
from consumers.crm.settings import CRM
from consumers.numbers import CallerNumber, normalise
from consumers.runtime.consumer import Context
from consumers.store.core import Store, open_store

JOURNAL_COLUMNS = (
    "ended_at",
    "desk",
    "direction",
    "call_id",
    "number",
    "number_e164",
    "contact_name",
    "answered",
    "ring_seconds",
    "talk_seconds",
)


def load_journal(
    settings: Settings, *, since: str | None = None, until: str | None = None, desks: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Journal entries of calls that ended in [since, until) at desks, oldest first."""
    from consumers.analytics.report import Selection

    store = open_store(settings, "crm", existing=True)
    if store is None:
        return []
    try:
        where, params = Selection(since=since, until=until, desks=desks).where("ended_at")
        rows = store.execute(
            f"SELECT {', '.join(JOURNAL_COLUMNS)} FROM journal {where} ORDER BY ended_at, call_key", params
        ).fetchall()
    finally:
        store.close()
    return [{**dict(row), "answered": bool(row["answered"])} for row in rows]


def contact_lookup(settings: Settings) -> ContactLookup:
    """The configured backend: HTTP when crm_lookup_url is set, else the store's contacts."""
    if CRM.of(settings).crm_lookup_url:
        return HttpContacts(settings)
    return open_contacts(settings)


class Crm(CallConsumer):
    """Screen pops by caller id, and the call journal."""

    name = "crm"
    record_keys = ("journal",)  # tables keyed by the record's id (call_key): store rebuild keeps them right

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.contacts = contact_lookup(settings)
        self.database = open_store(settings, "crm", wait=True)

    @classmethod
    def declare(cls, broker: Broker, settings: Settings) -> None:
        declare_events(broker, settings)
        declare_commands(broker, settings)  # pops go there

    def on_record(self, event: events.CallEvent, record: dict[str, Any], context: Context) -> str:
        outcome = "recorded"
        number = normalise(other_party(record), self.settings.region)
        if event.kind == "started" and event.direction == "inbound":
            outcome = self._pop(event, number, context)
        if record["ended_at"] is not None:
            self._journal(self.store, record, number)
            outcome += "+journaled"
        return outcome

    def _lookup(self, number: CallerNumber) -> events.Contact | None:
        if number.kind != "external" or number.e164 is None:
            return None
        contact = self.contacts.lookup(number.e164, number.raw)
        self.metrics.contact_lookup(contact is not None)
        return contact

    def _pop(self, event: events.CallEvent, number: CallerNumber, context: Context) -> str:
        age = (datetime.now(UTC) - events.parse_time(event.occurred_at)).total_seconds()
        if age > self.settings.popup_ttl:
            return "stale-no-pop"
        pop = events.ScreenPop(
            event_id=event.event_id,
            call_id=event.call_id or "",
            desk=event.desk,
            caller_id=event.caller_id,
            number_e164=number.e164,
            contact=self._lookup(number),
            occurred_at=event.occurred_at,
        )
        routed = context.publish(
            self.settings.commands_exchange,
            build_outgoing(
                pop,
                routing_key=f"desk.{event.desk}.popup",
                message_id=pop.event_id,
                type="popup",
                app_id="tcx-bridge-crm",
                expiration_ms=int(self.settings.popup_ttl * 1000),
            ),
        )
        self.metrics.pop_latency(age)
        if not routed:
            return "pop-unrouted"  # no agent queue for that desk: kept in the unrouted exchange
        return "popped" if pop.contact else "popped-unknown"

    def _journal(self, db: Store, record: dict[str, Any], number: CallerNumber) -> None:
        options = CRM.of(self.settings)
        contact = self._lookup(number)
        entry = {
            "call_key": record["id"],
            "desk": record["desk"],
            "direction": record["direction"],
            "call_id": record["call_id"],
            "number": number.raw,
            "number_e164": number.e164,
            "contact_name": contact.name if contact else None,
            "contact": json.loads(events.ENCODER.encode(contact)) if contact else None,
            "answered": bool(record["answered"]),
            "ring_seconds": record["ring_seconds"],
            "talk_seconds": record["talk_seconds"],
            "started_at": record["started_at"],
            "connected_at": record["connected_at"],
            "ended_at": record["ended_at"],
        }
        if options.crm_journal_url:
            first = record["started_at"] or record["ended_at"]
            key = f"{record['desk']}/{record['direction']}/{record['call_id']}/{first}"
            request_json(
                "POST",
                options.crm_journal_url,
                {k: v for k, v in entry.items() if k != "call_key"},
                options.crm_timeout,
                headers={"Idempotency-Key": key},
            )
            return
        values = {**entry, "contact": json.dumps(entry["contact"]) if entry["contact"] else None}
        db.execute(
            f"INSERT INTO journal ({', '.join(values)}) VALUES ({', '.join('?' * len(values))}) "
            f"ON CONFLICT (call_key) DO UPDATE SET {', '.join(f'{k} = excluded.{k}' for k in values)}",
            list(values.values()),
        )
