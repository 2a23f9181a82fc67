"""``tcx-bridge store rebuild NAME``: a consumer's call records rebuilt from the history, swapped in at once.

For the consumers that keep call records (analytics, crm, the wallboard, a plugin
built on CallConsumer), while the live consumer keeps running:

1. a fresh table ``<calls table>_rebuild`` (schema.calls_table_ddl) gets the rows
   that began before --since (or before the history's first event: what retention
   dropped from the broker is kept as it is) copied from the live table; a history
   without a call event rebuilds nothing;
2. the history is read from that day up to its tail (a timestamp offset) and each
   event the consumer's bindings route to it, from a sender the broker vouches for
   (the consumer's own rules: spoofed events are left out), is merged into the fresh
   table with the consumer's own merge (consumers.analytics.calls), duplicates dropped;
3. one transaction swaps it in: it locks the store (SQLite: the write transaction;
   PostgreSQL: ``processed`` and the calls table), reads what the history gained
   meanwhile, marks every event merged as processed for the consumer (so the live
   consumer, held at the lock, drops what the rebuild merged first), renames the
   tables, recreates the indexes (and the view calls_daily of analytics) and drops
   the old table.

The CRM's journal (what was sent to the CRM) is not rebuilt, only its call records;
its entries are keyed by their record's id, so the fresh table numbers its records
above every id in use and the swap points each entry at its call's new record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import UTC, date, datetime
from typing import Any

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.events import CALL_EVENT_DECODER, CallEvent, parse_time
from bridge.history import SLACK, offset_of, stream_argument, stream_tail
from bridge.topology import history_queue
from bridge.transport import Broker, Delivery
from consumers.analytics.calls import SLOTS, CallConsumer, apply_event, merge_batch, spoofed
from consumers.runtime.backfill import topic_matches
from consumers.store.core import Rows, Store, as_store
from consumers.store.schema import ARCHIVE, calls_table_ddl, daily_select

logger = logging.getLogger(__name__)

BATCH = 2000  # events merged per transaction


class Fresh(Store):
    """The consumer's store, writing its call records to the fresh table; event ids remembered in memory."""

    def __init__(self, inner: Store, table: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.consumer = inner.consumer
        self.calls_table = table
        self.seen: set[str] = set()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return self.inner.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.inner.executemany(sql, rows)

    def script(self, sql: str) -> None:
        self.inner.script(sql)

    @contextmanager
    def transaction(self, *, behind: bool = False) -> Iterator[None]:
        with self.inner.transaction(behind=behind):
            yield

    def settle(self) -> None:
        self.inner.settle()

    def returning_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[Any]:
        return self.inner.returning_many(sql, rows)

    def insert_ids(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[int]:
        return self.inner.insert_ids(table, columns, rows)

    def first_time(self, event_id: str) -> bool:
        new = event_id not in self.seen
        self.seen.add(event_id)
        return new

    def first_times(self, event_ids: Sequence[str]) -> set[str]:
        fresh = {event_id for event_id in event_ids if event_id not in self.seen}
        self.seen |= fresh
        return fresh

    def close(self) -> None:
        self.inner.close()


class FreshSqlite(Fresh):
    dialect = "sqlite"


class FreshPostgres(Fresh):
    dialect = "postgresql"


class Rebuild:
    """Rebuild one consumer's call records from the history (see the module docstring)."""

    def __init__(self, settings: Settings, consumer: CallConsumer, since: date | None) -> None:
        self.settings = settings
        self.consumer = consumer
        store = as_store(consumer.database)
        if store is None:
            raise ConfigError(f"consumer {consumer.name!r} keeps no store: nothing to rebuild")
        self.live = store
        self.table = store.calls_table
        kind = FreshPostgres if store.dialect == "postgresql" else FreshSqlite
        self.fresh = kind(store, f"{self.table}_rebuild")
        self.since = since
        self.patterns = [b.pattern for b in consumer.bindings(settings) if b.exchange == settings.exchange]
        self.linked: tuple[str, ...] = tuple(getattr(consumer, "record_keys", ()))
        self.merged = 0

    def run(self, broker: Broker, echo: Callable[[str], None]) -> int:
        """Rebuild and swap; the number of events merged."""
        queue = history_queue(self.settings)
        if broker.queue_info(queue) is None:
            raise ConfigError(f"the history stream {queue!r} does not exist; run tcx-bridge topology declare")
        first = _first_moment(broker, queue)
        if first is None:
            raise ConfigError(
                f"the history stream {queue!r} holds no call event: nothing to rebuild from "
                "(the table is left as it is)"
            )
        start_day = first
        if self.since is not None:
            wanted = datetime.combine(self.since, datetime.min.time(), UTC)
            if wanted < first:
                echo(f"the history begins at {_wire_time(first)}: records before it are kept as they are")
            start_day = max(wanted, first)
        self._create(start_day)
        tail = stream_tail(broker, queue)
        origin = "first" if start_day == first else stream_argument(start_day - SLACK)
        if tail is not None:
            self._read(broker, queue, origin, tail, start_day, commit=True)
        with self.live.transaction():
            self._lock()
            now = stream_tail(broker, queue)
            if now is not None and (tail is None or now > tail):
                again = origin if tail is None else tail + 1
                self._read(broker, queue, again, now, start_day, commit=False)
            self.live.first_times(sorted(self.fresh.seen))  # the live consumer drops what was merged here
            self._swap()
        return self.merged

    def _create(self, start: datetime | None) -> None:
        fresh = self.fresh.calls_table
        with self.live.transaction():
            self.live.script(f"DROP TABLE IF EXISTS {fresh};\n" + calls_table_ddl(self.live.dialect, fresh))
            self._number_above(self._highest_key())
            if start is not None:
                columns = ", ".join(_columns(self.live, self.table))
                self.live.execute(
                    f"INSERT INTO {fresh} ({columns}) SELECT {columns} FROM {self.table} "
                    "WHERE coalesce(started_at, connected_at, ended_at) < ?",
                    (_wire_time(start),),
                )

    def _read(
        self, broker: Broker, queue: str, origin: object, tail: int, start: datetime | None, *, commit: bool
    ) -> None:
        """Merge the history from origin up to tail; commit: in transactions of BATCH events (else in the
        caller's)."""
        batch: list[tuple[int, CallEvent]] = []
        with closing(broker.stream(queue, origin, idle=5.0)) as reading:
            for delivery in reading:
                event = self._event(delivery, start)
                if event is not None:
                    batch.append((len(batch), event))
                if commit and len(batch) >= BATCH:
                    with self.live.transaction():
                        self._merge(batch)
                    batch = []
                if offset_of(delivery) >= tail:
                    break
        if not batch:
            return
        if commit:
            with self.live.transaction():
                self._merge(batch)
        else:
            self._merge(batch)

    def _event(self, delivery: Delivery, start: datetime | None) -> CallEvent | None:
        """The call event the live consumer would have merged from this delivery, or None."""
        if delivery.exchange != self.settings.exchange:
            return None
        if not any(topic_matches(pattern, delivery.routing_key) for pattern in self.patterns):
            return None
        try:
            event = CALL_EVENT_DECODER.decode(delivery.body)
        except Exception:  # noqa: BLE001  # what the live consumer dead-letters, the rebuild leaves out
            return None
        if event.kind not in SLOTS or event.call_id is None or spoofed(self.settings, delivery, event):
            return None
        if start is not None and parse_time(event.occurred_at) < start:
            return None
        return event

    def _merge(self, batch: Sequence[tuple[int, CallEvent]]) -> None:
        if self.fresh.dialect == "postgresql":
            merge_batch(self.fresh, batch)
        else:
            for _, event in batch:
                if self.fresh.first_time(event.event_id):
                    apply_event(self.fresh, event)
        self.merged += len(batch)

    def _lock(self) -> None:
        if self.live.dialect == "postgresql":  # processed first: a live batch holds it before the calls
            self.live.execute(f"LOCK TABLE processed, {self.table} IN SHARE ROW EXCLUSIVE MODE")

    def _highest_key(self) -> int:
        """The highest record id in use: in the live table, or as a key of a linked table (the journal)."""
        found = [f"SELECT max(id) AS n FROM {self.table}"]
        found += [f"SELECT max(call_key) AS n FROM {linked}" for linked in self.linked]
        row = self.live.execute(f"SELECT max(n) AS n FROM ({' UNION ALL '.join(found)}) AS k").fetchone()
        return int(row["n"] or 0)

    def _number_above(self, highest: int) -> None:
        """The fresh table's ids start above highest: a linked row never points at another call's record."""
        fresh = self.fresh.calls_table
        if self.live.dialect == "postgresql":
            self.live.execute(f"ALTER TABLE {fresh} ALTER COLUMN id RESTART WITH {highest + 1}")
        elif highest:  # SQLite numbers from the highest id: a placeholder row, deleted at the swap
            self.live.execute(
                f"INSERT INTO {fresh} (id, desk, direction, call_id) VALUES (?, '', '', '')", (highest,)
            )

    def _relink(self) -> None:
        """Point each linked row (a journal entry) at its call's new record: same key, same first moment."""
        fresh = self.fresh.calls_table
        self.live.execute(f"DELETE FROM {fresh} WHERE desk = '' AND call_id = ''")  # the placeholder
        first = "coalesce({t}.started_at, {t}.connected_at, {t}.ended_at)"
        for linked in self.linked:
            match = (
                f"FROM {fresh} c WHERE c.desk = {linked}.desk AND c.direction = {linked}.direction "
                f"AND c.call_id = {linked}.call_id AND {first.format(t='c')} = {first.format(t=linked)}"
            )
            self.live.execute(
                f"UPDATE {linked} SET call_key = (SELECT max(c.id) {match}) WHERE EXISTS (SELECT 1 {match})"
            )

    def _swap(self) -> None:
        self._relink()
        table, fresh, old = self.table, self.fresh.calls_table, f"{self.table}_replaced"
        view = table == "calls"  # calls_daily reads it (in PostgreSQL, analytics' alone)
        statements = ["DROP VIEW IF EXISTS calls_daily"] if view else []
        statements += [
            f"DROP TABLE IF EXISTS {old}",
            f"ALTER TABLE {table} RENAME TO {old}",
            f"ALTER TABLE {fresh} RENAME TO {table}",
            f"DROP TABLE {old}",
            f"DROP INDEX IF EXISTS {fresh}_key",
            f"DROP INDEX IF EXISTS {fresh}_started",
        ]
        for statement in statements:
            self.live.execute(statement)
        self.live.script(calls_table_ddl(self.live.dialect, table))  # the indexes, under their own names
        if view:
            daily = daily_select(self.live.dialect)  # with the archived days, as schema version 2 made it
            self.live.execute(f"CREATE VIEW calls_daily AS {daily} UNION ALL SELECT * FROM {ARCHIVE}")


def _columns(store: Store, table: str) -> list[str]:
    """The calls table's columns but its id (the fresh table numbers its own rows)."""
    if store.dialect == "sqlite":
        names = [row["name"] for row in store.execute(f"PRAGMA table_info({table})")]
    else:
        rows = store.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "AND table_schema = current_schema() ORDER BY ordinal_position",
            (table,),
        )
        names = [row["column_name"] for row in rows]
    return [name for name in names if name != "id"]


def _wire_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _first_moment(broker: Broker, queue: str) -> datetime | None:
    """When the history's first call event occurred, or None when it holds none."""
    with closing(broker.stream(queue, "first", idle=1.0, prefetch=100)) as reading:
        for delivery in reading:
            try:
                return parse_time(CALL_EVENT_DECODER.decode(delivery.body).occurred_at)
            except Exception:  # noqa: BLE001  # not a call event: the next one says
                continue
    return None
