"""The wallboard consumer: today's calls and every desk's state, as one snapshot for the page.

``tcx-bridge wallboard`` runs it with the web page (consumers.wallboard.web);
queue ``tcx.wallboard``, bound to the call events like the analytics consumer,
with a store of its own (``<data_dir>/wallboard.sqlite3``, or table
``wallboard_calls`` in PostgreSQL: the same call records,
merged by ``occurred_at``, duplicates dropped), so a restart shows the same
numbers; at start it backfills the day from the history stream (docs/history.md), so
a lost store is filled again. The day is the local day of the ``timezone`` setting.

The board is kept, not recomputed (consumers.wallboard.state.Board): the day is
read from the store at start, at the day's turn, and after a batch whose commit
it could not see; then each merged record updates the board by itself once its
batch committed (tick() runs after the commit). The figures are calls_daily's,
as ``tcx-bridge report`` makes them. Contact names are looked up once per
number (again after CONTACTS_FRESH seconds).

Snapshot (JSON, pushed to the browsers at most every TICK seconds after a change):

    tiles      ringing, longest wait (since), talking (sums of the desks), answered, missed,
               answer rate, service level (inbound answered within service_level_seconds /
               answered, the calls_daily column: the consumer writes the setting to its store at
               start), average ring and talk -- the inbound figures of ``tcx-bridge report``;
               no_end_seen (today's calls whose end never came)
    desks      each desk seen today: idle, ringing (caller, contact), talking (since), quiet;
               its ringing, talking and no_end_seen counts
    recent     the last 20 calls
    callbacks, callback_tiles   the Callbacks panel and its tiles (a Panel the wallboard command adds)
    chart      calls per 15 minutes today, from the first busy hour to now: slot start, count
    timezone, locale   how the page writes times and numbers (24-hour clock by default)

Caller numbers are written one way: national for the ``region``'s country, international otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from bridge.config import Settings
from bridge.events import CallEvent, parse_time
from bridge.transport import Delivery
from consumers.analytics.calls import CallConsumer
from consumers.analytics.settings import ANALYTICS
from consumers.numbers import normalise
from consumers.runtime.consumer import Context
from consumers.store.core import open_store, sqlite_path
from consumers.wallboard.state import Board, day_of, snapshot, zone_of

__all__ = ["Board", "Panel", "Wallboard", "snapshot"]

TICK = 0.1
REFRESH = 30.0  # seconds: quiet desks and the day change without events
CONTACTS_FRESH = 300.0  # seconds a contact name is shown from the cache before it is looked up again


class Panel(Protocol):
    """A part of the page kept by another consumer (the Callbacks panel, consumers.callbacks.panel)."""

    def changed(self) -> bool:
        """Whether its part changed since it last said so (asked between deliveries)."""

    def view(
        self, now: datetime, midnight: datetime, contact_name: Callable[[str | None], str | None]
    ) -> dict[str, Any]:
        """Its keys of the snapshot at now; midnight: the start of the board's local day."""

    def close(self) -> None: ...


class Wallboard(CallConsumer):
    """The supervisor's live wallboard: today's calls and every desk's state (tcx-bridge wallboard).

    The day is read from the store once (at start, at the day's turn, and after
    a batch that may not have committed); then each merged record updates the
    board when its batch has committed (tick() runs after the commit).
    """

    name = "wallboard"
    batch_merge = True  # on_record only keeps the record for the board

    def __init__(self, settings: Settings, *, masked: bool = False) -> None:
        super().__init__(settings)
        self.database = open_store(settings, "wallboard", wait=True)
        self.masked = masked
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.current: dict[str, Any] = {}
        self.board: Board | None = None
        self._staged: list[dict[str, Any]] = []  # records of the batch in hand, shown once it committed
        self._dirty = True
        self._next_refresh = 0.0
        self._lock = threading.Lock()
        self._contacts_path = sqlite_path(settings, "contacts")
        self._contacts: Any = None
        self._names: dict[str | None, str | None] = {}  # number -> contact name, for CONTACTS_FRESH
        self._names_until = 0.0
        self.panels: list[
            Panel
        ] = []  # parts of the page from other consumers' stores (the wallboard command's)

    def prepare(self, deliveries: Sequence[Delivery]) -> None:
        if self._staged:  # the last batch never reached tick(): the store knows whether it committed
            self._staged.clear()
            self.board = None
        super().prepare(deliveries)

    def forget(self, settings: Settings, request: Any, user_id: str | None) -> dict[str, int]:
        """Erase the number in the store, then rebuild the board from it (it showed the number)."""
        found = super().forget(settings, request, user_id)
        self.board, self._dirty = None, True
        return found

    def on_record(self, event: CallEvent, record: dict[str, Any], context: Context) -> str:
        self._staged.append(record)
        self._dirty = True
        return "shown"

    def contact_name(self, number: str | None) -> str | None:
        """The contact the CRM's store has for number (the same lookup as a screen pop), cached a while."""
        if number in self._names:
            return self._names[number]
        read = normalise(number, self.settings.region)
        if read.e164 is None:
            name = None
        elif self._contacts is None and not self.settings.store_url and not self._contacts_path.exists():
            name = None  # no contacts imported yet
        else:
            if self._contacts is None:
                from consumers.crm.contacts import open_contacts

                self._contacts = open_contacts(self.settings)
            found = self._contacts.lookup(read.e164)
            name = found.name if found else None
        self._names[number] = name
        return name

    def _board(self, now: datetime) -> Board:
        """The day's board: read from the store when there is none or the day turned, else updated."""
        day = day_of(self.settings, now)
        if self.board is None or self.board.day != day:
            store = self.store
            with store.transaction():  # the service level as analytics writes it: one definition
                store.execute(
                    "UPDATE service_level SET seconds = ?",
                    (ANALYTICS.of(self.settings).service_level_seconds,),
                )
                self.board = Board.load(store, self.settings, day)
            self._staged.clear()  # committed (tick runs after the commit): the store had them
        for record in self._staged:
            self.board.apply(record)
        self._staged.clear()
        if time.monotonic() >= self._names_until:
            self._names.clear()
            self._names_until = time.monotonic() + CONTACTS_FRESH
        return self.board

    def refresh(self, now: datetime | None = None) -> dict[str, Any]:
        """The snapshot at now (default: now), given to every listener."""
        with self._lock:
            now = now or datetime.now(UTC)
            board = self._board(now)
            self.current = board.view(now, masked=self.masked, contact_name=self.contact_name)
            midnight = datetime.combine(board.day, datetime.min.time(), zone_of(self.settings))
            for panel in self.panels:
                self.current |= panel.view(now, midnight, self.contact_name)
        for listener in list(self.listeners):
            listener(self.current)
        return self.current

    def tick(self, broker: Any, settings: Settings) -> None:
        now = time.monotonic()
        if any([panel.changed() for panel in self.panels]):  # each looks
            self._dirty = True
        if self._dirty or now >= self._next_refresh:
            self._dirty = False
            current = self.refresh()
            wait = REFRESH
            if current.get("next_change"):  # a call turns "no end seen" then, without an event
                due = parse_time(current["next_change"]) - datetime.now(UTC)
                wait = min(wait, max(TICK, due.total_seconds() + TICK))
            self._next_refresh = now + wait

    def close(self) -> None:
        for panel in self.panels:
            panel.close()
        super().close()
