"""Call records built from call events in any order, stored in SQLite.

A call is identified by desk, direction and call_id. For outbound calls 3CX may
use the dialed number as call_id, so one key can hold several calls over time:
an event joins the newest record of its key whose slot for it is still empty and
whose times stay in order (started <= connected <= ended) within 12 hours;
otherwise it starts a new record. Times come from ``occurred_at``, never from
the arrival order, so the record is right whatever order the events arrive in.

    ring_seconds  started -> connected (null when not answered)
    talk_seconds  connected -> ended   (null when not answered or not ended yet)
    answered      connected_at is known

The other party of a call (:func:`other_party`) is the one rule the CRM's journal
and the wallboard's caller column share.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

import msgspec

from bridge.access import desk_of_user
from bridge.config import Settings
from bridge.errors import HandlerError
from bridge.events import CALL_EVENT_DECODER, FORGET_KEY, MAX_BODY, CallEvent, parse_time
from bridge.topology import Binding
from bridge.transport import Delivery
from consumers.runtime.consumer import Batch, Consumer, Context
from consumers.store.core import Store, as_store
from consumers.store.schema import calls_table_ddl

WINDOW_SECONDS = 12 * 3600
CANDIDATES = 20  # the newest records of a key an event may join
CALL_PATTERNS = ("call.started.#", "call.connected.#", "call.ended.#")
SLOTS = {"started": "started_at", "connected": "connected_at", "ended": "ended_at"}
ORDER = tuple(SLOTS.values())  # a record's times, in the order they must come
WINDOW = timedelta(seconds=WINDOW_SECONDS)

CALLS_SCHEMA = calls_table_ddl("sqlite", "calls")  # the migrations' calls table, for a plugin's own file

# a record's times are read again at each event that joins it: parsed once (datetimes are immutable)
_moment = functools.lru_cache(maxsize=4096)(parse_time)


def _seconds(start: str | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    return round((_moment(end) - _moment(start)).total_seconds(), 6)


def other_party(record: Mapping[str, Any]) -> str | None:
    """The other party's number of a call record, as given: the caller id, else the number dialed.

    The caller id when the call's ``started`` event gave one (an inbound caller);
    else, for an outbound call, its call id, which 3CX makes the number dialed;
    else None (an inbound call whose start was not seen yet).
    """
    if record["caller_id"] is not None:
        return str(record["caller_id"])
    return str(record["call_id"]) if record["direction"] == "outbound" else None


def _fits(record: Mapping[str, Any], slot: str, moment: datetime) -> bool:
    """Whether moment can fill record's empty slot: every time it holds within the window, and in order."""
    if record[slot] is not None:
        return False
    position = ORDER.index(slot)
    for at, name in enumerate(ORDER):
        value = record[name]
        if value is None or at == position:
            continue
        other = _moment(value)
        if abs(moment - other) > WINDOW or (other > moment if at < position else moment > other):
            return False
    return True


def merge(candidates: Sequence[Mapping[str, Any]], event: CallEvent) -> tuple[dict[str, Any], int | None]:
    """The record event belongs in (the newest candidate it fits, else a new one), with event merged.

    candidates: the records of the event's key, newest first. Returns the merged
    record and the index of the candidate it updates (None: a new record). No I/O.
    """
    slot = SLOTS[event.kind]
    moment = _moment(event.occurred_at)
    index = next((i for i, row in enumerate(candidates) if _fits(row, slot, moment)), None)
    merged: dict[str, Any] = (
        dict(candidates[index])
        if index is not None
        else {
            "id": None,
            "desk": event.desk,
            "direction": event.direction,
            "call_id": event.call_id,
            "caller_id": None,
            "extension": event.extension,
            **dict.fromkeys(SLOTS.values()),
        }
    )
    merged[slot] = event.occurred_at
    if event.kind == "started" and event.caller_id is not None:
        merged["caller_id"] = event.caller_id
    merged["ring_seconds"] = _seconds(merged["started_at"], merged["connected_at"])
    merged["talk_seconds"] = _seconds(merged["connected_at"], merged["ended_at"])
    merged["answered"] = merged["connected_at"] is not None
    return merged, index


INSERTED = ("desk", "direction", "call_id", "caller_id", "extension", *SLOTS.values(), "ring_seconds",
            "talk_seconds", "answered")  # fmt: skip
CHANGED = ("caller_id", *SLOTS.values(), "ring_seconds", "talk_seconds", "answered")


def candidates_of(store: Store, event: CallEvent) -> list[dict[str, Any]]:
    """The newest records of the event's key (desk, direction, call_id), newest first."""
    rows = store.execute(
        f"SELECT * FROM {store.calls_table} WHERE desk = ? AND direction = ? AND call_id = ? "
        f"ORDER BY id DESC LIMIT {CANDIDATES}",
        (event.desk, event.direction, event.call_id),
    )
    return [dict(row) for row in rows]


def insert_sql(store: Store) -> str:
    columns = ", ".join(INSERTED)
    return (
        f"INSERT INTO {store.calls_table} ({columns}) VALUES ({', '.join('?' * len(INSERTED))}) RETURNING id"
    )


def update_sql(store: Store) -> str:
    return f"UPDATE {store.calls_table} SET {', '.join(f'{name} = ?' for name in CHANGED)} WHERE id = ?"


def apply_event(store: Store, event: CallEvent) -> dict[str, Any]:
    """Merge one started/connected/ended event into its call record; return the record.

    Runs inside the caller's transaction.
    """
    merged, index = merge(candidates_of(store, event), event)
    if index is None:
        merged["id"] = store.execute(insert_sql(store), [merged[name] for name in INSERTED]).fetchone()["id"]
    else:
        store.execute(update_sql(store), [*(merged[name] for name in CHANGED), merged["id"]])
    return merged


def key_of(store: Store, event: CallEvent) -> str:
    """What replicas lock before merging an event: its table and call key."""
    return f"{store.calls_table}/{event.desk}/{event.direction}/{event.call_id}"


def spoofed(settings: Settings | None, delivery: Delivery, event: CallEvent) -> str | None:
    """Why an event cannot be from the desk it names, judged by the user the broker vouches for; else None.

    With trust_user_id (the default) the event must carry a user_id; a desk's
    user (desk-<desk>) speaks for its own desk only; other users (an admin's
    tools, guest in a test) are taken at their word.
    """
    if settings is not None and not settings.trust_user_id:
        return None
    if not delivery.user_id:
        return "spoofed: the event has no user_id, so the broker vouches for no sender"
    speaks_for = desk_of_user(delivery.user_id)
    if speaks_for in (None, event.desk):
        return None
    return (
        f"spoofed: the event is for desk {event.desk!r} but user {delivery.user_id!r} published it, "
        f"who speaks for desk {speaks_for!r} only"
    )


def merge_batch(store: Store, events: Sequence[tuple[int, CallEvent]]) -> dict[int, dict[str, Any] | None]:
    """Dedupe and merge a batch of (delivery tag, event) at once; tag -> record (None: a duplicate).

    Inside the batch's transaction (on PostgreSQL after the keys were locked): the same
    merge as apply_event, with the ids recorded, the candidates read, and the records
    written, all at once (on SQLite, in the process: one statement per key read).
    """
    fresh = store.first_times([event.event_id for _, event in events])
    keys = sorted(
        {(event.desk, event.direction, str(event.call_id)) for _, event in events if event.event_id in fresh}
    )
    known = _candidates_of_keys(store, keys)
    created: list[dict[str, Any]] = []
    updated: dict[int, dict[str, Any]] = {}
    outcome: dict[int, dict[str, Any] | None] = {}
    for tag, event in events:
        if event.event_id not in fresh:
            outcome[tag] = None
            continue
        fresh.discard(event.event_id)  # a second copy in this batch is a duplicate too
        records = known[(event.desk, event.direction, str(event.call_id))]
        merged, index = merge(records, event)
        if index is None:
            records.insert(0, merged)
            created.append(merged)
        else:
            records[index].update(merged)
            if merged["id"] is not None:
                updated[merged["id"]] = records[index]
        outcome[tag] = merged
    if created:
        rows = [[row[name] for name in INSERTED] for row in created]
        for row, found in zip(created, store.insert_ids(store.calls_table, INSERTED, rows), strict=True):
            row["id"] = found
    if updated:
        store.executemany(
            update_sql(store), [[*(row[name] for name in CHANGED), key] for key, row in updated.items()]
        )
    return outcome


def _candidates_of_keys(
    store: Store, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """The newest records of each key (desk, direction, call_id), newest first: one query on PostgreSQL."""
    known: dict[tuple[str, str, str], list[dict[str, Any]]] = {key: [] for key in keys}
    if not keys:
        return known
    if store.dialect != "postgresql":  # in the process: no round trip to save
        select = (
            f"SELECT * FROM {store.calls_table} WHERE desk = ? AND direction = ? AND call_id = ? "
            f"ORDER BY id DESC LIMIT {CANDIDATES}"
        )
        for key in keys:
            known[key] = [dict(row) for row in store.execute(select, key)]
        return known
    rows = store.execute(
        "SELECT c.* FROM unnest(?::text[], ?::text[], ?::text[]) AS k(desk, direction, call_id) "
        f"CROSS JOIN LATERAL (SELECT * FROM {store.calls_table} t WHERE t.desk = k.desk "
        "AND t.direction = k.direction AND t.call_id = k.call_id "
        f"ORDER BY t.id DESC LIMIT {CANDIDATES}) c",
        [[key[0] for key in keys], [key[1] for key in keys], [key[2] for key in keys]],
    )
    for row in rows:
        known[(row["desk"], row["direction"], row["call_id"])].append(dict(row))
    return known


def _events_of(deliveries: Sequence[Delivery]) -> Iterator[tuple[Delivery, CallEvent]]:
    """A batch's call events: as the runner decoded them (a Batch), or decoded here from a plain list."""
    decoded = deliveries.decoded if isinstance(deliveries, Batch) else None
    for delivery in deliveries:
        if decoded is not None:
            event = decoded.get(delivery.delivery_tag)  # absent: handle() never sees it
        elif len(delivery.body) > MAX_BODY:
            continue  # handle() never reads it: dead-lettered as oversize
        else:
            try:
                event = CALL_EVENT_DECODER.decode(delivery.body)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # handle() dead-letters it
        if isinstance(event, CallEvent):
            yield delivery, event


class CallConsumer(Consumer):
    """Base of the consumers that keep call records: bound to the call events, duplicates dropped.

    handle() merges each new event into its record (in the runtime's batch
    transaction, with the event id) and passes the record to on_record().
    On PostgreSQL, prepare() first locks the batch's call keys (replicas on one
    queue then merge one call at a time). With ``batch_merge`` it merges the whole
    batch at once (four statements on PostgreSQL; on SQLite in its write
    transaction too); a consumer whose on_record has side effects that can fail
    (the CRM) leaves it off, so each event stays in its own savepoint.
    prepare() takes the events as the runner decoded them: each is decoded once.
    """

    database: Store | sqlite3.Connection
    batch_merge: ClassVar[bool] = False
    _prepared: dict[int, dict[str, Any] | None]

    @property
    def store(self) -> Store:
        """The consumer's database as a Store (a plugin may hold a plain sqlite3 connection)."""
        cached = self.__dict__.get("_store")
        if cached is None or cached[0] is not self.database:
            store = as_store(self.database)
            assert store is not None
            cached = self.__dict__["_store"] = (self.database, store)
        return cached[1]

    @classmethod
    def bindings(cls, settings: Settings) -> Sequence[Binding]:
        found = [Binding(settings.exchange, pattern) for pattern in CALL_PATTERNS]
        return [*found, Binding(settings.commands_exchange, FORGET_KEY)]  # privacy.forget: the runner's

    def decode(self, body: bytes, routing_key: str) -> Any:
        return CALL_EVENT_DECODER.decode(body)

    def prepare(self, deliveries: Sequence[Delivery]) -> None:
        self._prepared = {}
        store = self.store
        postgres = store.dialect == "postgresql"  # a SQLite write transaction holds the whole file already
        if not postgres and not self.batch_merge:
            return
        settings: Settings | None = getattr(self, "settings", None)  # a plugin may not keep them
        found = [
            (delivery.delivery_tag, event)
            for delivery, event in _events_of(deliveries)
            if event.kind in SLOTS and event.call_id is not None and not spoofed(settings, delivery, event)
        ]  # the others handle() ignores, or dead-letters (spoofed)
        if not found:
            return
        if postgres:
            store.lock(key_of(store, event) for _, event in found)
        if self.batch_merge:
            self._prepared = merge_batch(store, found)

    def handle(self, message: Any, context: Context) -> str:
        event: CallEvent = message
        prepared = getattr(self, "_prepared", {})
        tag = context.delivery.delivery_tag
        if tag in prepared:  # merged by prepare(), which let no spoofed event in
            record = prepared.pop(tag)
            return "duplicate" if record is None else self.on_record(event, record, context)
        problem = spoofed(context.settings, context.delivery, event)
        if problem is not None:
            raise HandlerError(problem)
        if event.kind == "invalid" or event.call_id is None:
            return "ignored"
        if not self.store.first_time(event.event_id):
            return "duplicate"
        return self.on_record(event, apply_event(self.store, event), context)

    def settled(self, delivery: Delivery) -> bool:
        """A message the batch merge recorded (or found a duplicate): handle() only passes its record on."""
        return delivery.delivery_tag in getattr(self, "_prepared", {})

    def on_record(self, event: CallEvent, record: dict[str, Any], context: Context) -> str:
        """React to an updated call record; return the outcome for the log line (with ``batch_merge``,
        it must write nothing to the store: it runs outside a savepoint)."""
        return "recorded"

    def close(self) -> None:
        self.store.close()
