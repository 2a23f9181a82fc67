"""The wallboard consumer: today's calls and every desk's state, as one snapshot for the page.

``tcx-bridge wallboard`` runs it with the web page (consumers.wallboard.web);
queue ``tcx.wallboard``, bound to the call events like the analytics consumer,
with a store of its own (``<data_dir>/wallboard.sqlite3``, or table
``wallboard_calls`` in PostgreSQL: the same call records,
merged by ``occurred_at``, duplicates dropped), so a restart shows the same
numbers. The day is the local day of the ``timezone`` setting.

One story: every open call is classified once (``live``): ringing (inbound, not
answered), talking (answered), dialing (outbound, not answered) or -- when its
last event is older than ``wallboard_lost_after`` -- "no end seen", which is
never live again. The desk cards count their calls from that classification
and the ringing/talking tiles are the sums of the desk cards, so the two always agree.

Snapshot (JSON, pushed to the browsers at most every TICK seconds after a change):

    tiles      ringing, longest wait (since), talking (sums of the desks), answered, missed,
               answer rate, service level (inbound answered within service_level_seconds /
               answered), average ring and talk -- the inbound figures of ``tcx-bridge report``;
               no_end_seen (today's calls whose end never came)
    desks      each desk seen today: idle, ringing (caller, contact), talking (since), quiet;
               its ringing, talking and no_end_seen counts
    recent     the last 20 calls
    chart      calls per 15 minutes today, from the first busy hour to now: slot start, count
    timezone, locale   how the page writes times and numbers (24-hour clock by default)

Caller numbers are written one way: national for the ``region``'s country, international otherwise.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from bridge.config import Settings
from bridge.events import CallEvent, format_time, parse_time
from consumers.analytics.calls import CallConsumer
from consumers.analytics.report import FIRST_MOMENT, Selection, rollup
from consumers.numbers import display, normalise
from consumers.runtime.consumer import Context
from consumers.store.core import Store, open_store, sqlite_path
from consumers.store.schema import daily_select

TICK = 0.1
REFRESH = 30.0  # seconds: quiet desks and the day change without events
CHART_HOURS = 6  # the chart shows at least this many hours up to now
NO_END = "no end seen"


@functools.cache
def _machine_zone() -> tzinfo:
    """The machine's zone, by its IANA name when it can be found (browsers need the name)."""
    from zoneinfo import ZoneInfo

    names = [os.environ.get("TZ", "").lstrip(":")]
    link = os.path.realpath("/etc/localtime")
    if "zoneinfo/" in link:
        names.append(link.split("zoneinfo/", 1)[1])
    for name in filter(None, names):
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            continue
    local = datetime.now().astimezone().tzinfo
    return local if local is not None else UTC


def zone_of(settings: Settings) -> tzinfo:
    if settings.timezone:
        from zoneinfo import ZoneInfo

        return ZoneInfo(settings.timezone)
    return _machine_zone()


def zone_name(zone: tzinfo) -> str:
    return str(getattr(zone, "key", None) or zone)


def mask(number: str | None) -> str | None:
    """Only the last four digits: ``•••• 4567``."""
    if not number:
        return number
    digits = "".join(c for c in number if c.isdigit())
    return "\u2022\u2022\u2022\u2022 " + digits[-4:] if len(digits) > 4 else "\u2022\u2022\u2022\u2022"


def thresholds_of(text: str) -> dict[str, list[float]]:
    found = {}
    for part in filter(None, (item.strip() for item in text.split(","))):
        key, _, levels = part.partition("=")
        amber, _, red = levels.partition("/")
        found[key.strip()] = [float(amber), float(red)]
    return found


def live(row: dict[str, Any], lost_before: datetime) -> str | None:
    """What an open call is now: ringing, talking, dialing, NO_END (lost); None once ended."""
    if row["ended_at"]:
        return None
    last = row["connected_at"] or row["started_at"]
    if last is None or parse_time(last) < lost_before:
        return NO_END
    if row["connected_at"]:
        return "talking"
    return "dialing" if row["direction"] == "outbound" else "ringing"


def chart_of(rows: list[dict[str, Any]], zone: tzinfo, now: datetime) -> list[dict[str, Any]]:
    """Calls per 15 minutes (by their first moment, local time), from the first busy hour to now."""
    local_now = now.astimezone(zone)
    today = local_now.date()
    slots = [0] * 96
    for row in rows:
        first = parse_time(row["started_at"] or row["connected_at"] or row["ended_at"]).astimezone(zone)
        if first.date() == today:
            slots[first.hour * 4 + first.minute // 15] += 1
    busy = [i for i, count in enumerate(slots) if count]
    first_hour = max(0, min([local_now.hour - CHART_HOURS + 1, *(i // 4 for i in busy)]))
    last_hour = min(23, max([local_now.hour, *(i // 4 for i in busy)]))
    return [
        {
            "at": format_time(datetime(today.year, today.month, today.day, i // 4, i % 4 * 15, tzinfo=zone)),
            "calls": slots[i],
        }
        for i in range(first_hour * 4, last_hour * 4 + 4)
    ]


def snapshot(
    store: Store,
    settings: Settings,
    *,
    now: datetime | None = None,
    masked: bool = False,
    contact_name: Callable[[str | None], str | None] = lambda _: None,
) -> dict[str, Any]:
    """Everything the page shows, computed from the call records."""
    zone = zone_of(settings)
    now = now or datetime.now(UTC)
    today = now.astimezone(zone).date()
    start = datetime(today.year, today.month, today.day, tzinfo=zone).astimezone(UTC)
    end = start + timedelta(days=1)
    where, params = Selection(since=format_time(start), until=format_time(end)).where()
    rows = [
        {**dict(row), "answered": bool(row["answered"])}
        for row in store.execute(f"SELECT * FROM {store.calls_table} {where} ORDER BY {FIRST_MOMENT}", params)
    ]
    inbound = [row for row in rows if row["direction"] != "outbound"]
    # the day's figures exactly as ``tcx-bridge report`` makes them: the calls_daily query, summed
    daily = store.execute(daily_select(store.dialect, store.calls_table, where), params)
    summary = rollup([dict(row) for row in daily], [])
    answered = [row for row in inbound if row["answered"] and row["ring_seconds"] is not None]
    within = [row for row in answered if row["ring_seconds"] <= settings.service_level_seconds]
    lost_after = timedelta(seconds=settings.wallboard_lost_after)
    states = {row["id"]: live(row, now - lost_after) for row in rows}

    def caller(row: dict[str, Any]) -> str | None:
        number = display(
            row["caller_id"] if row["direction"] != "outbound" else row["call_id"], settings.region
        )
        return mask(number) if masked else number

    def contact(row: dict[str, Any]) -> str | None:
        return contact_name(row["caller_id"] if row["direction"] != "outbound" else row["call_id"])

    desks: dict[str, dict[str, Any]] = {}
    for row in rows:
        last = max(t for t in (row["started_at"], row["connected_at"], row["ended_at"]) if t)
        desk = desks.setdefault(
            row["desk"],
            {"desk": row["desk"], "state": "idle", "since": last, "last": last, "ringing": 0, "talking": 0,
             "no_end_seen": 0},
        )  # fmt: skip
        desk["last"] = max(desk["last"], last)
        state = states[row["id"]]
        if state in ("ringing", "talking"):
            desk[state] += 1
        elif state == NO_END:
            desk["no_end_seen"] += 1
    # the call a card shows: the longest-waiting caller, else the longest talk
    shown: dict[str, tuple[tuple[bool, str], str, dict[str, Any]]] = {}
    for row in rows:
        state = states[row["id"]]
        if state in ("ringing", "talking"):
            rank = (state == "talking", row["started_at"] if state == "ringing" else row["connected_at"])
            if row["desk"] not in shown or rank < shown[row["desk"]][0]:
                shown[row["desk"]] = (rank, state, row)
    for (_, since), state, row in shown.values():
        desks[row["desk"]] |= {"state": state, "since": since, "caller": caller(row), "contact": contact(row)}
    quiet = format_time(now - timedelta(minutes=settings.desk_idle_minutes))
    for desk in desks.values():
        if desk["state"] == "idle":
            desk["since"] = desk["last"]
            if desk["last"] < quiet:
                desk["state"] = "quiet"
    cards = sorted(desks.values(), key=lambda d: d["desk"])
    ringing = [row for row in rows if states[row["id"]] == "ringing"]
    deadlines = [
        parse_time(row["connected_at"] or row["started_at"]) + lost_after
        for row in rows
        if states[row["id"]] in ("ringing", "talking", "dialing")
    ]
    recent = []
    for row in sorted(rows, key=lambda r: r["started_at"] or r["ended_at"] or "", reverse=True)[:20]:
        outcome = states[row["id"]] or ("answered" if row["answered"] else "missed")
        if row["direction"] == "outbound" and row["ended_at"]:
            outcome = "connected" if row["answered"] else "not connected"
        recent.append({
            "time": row["started_at"] or row["ended_at"], "desk": row["desk"], "direction": row["direction"],
            "caller": caller(row), "contact": contact(row), "outcome": outcome,
            "ring": row["ring_seconds"], "talk": row["talk_seconds"],
        })  # fmt: skip
    return {
        "day": today.isoformat(),
        "timezone": zone_name(zone),
        "locale": settings.wallboard_locale,
        "now": format_time(now),
        "tiles": {
            "ringing": sum(desk["ringing"] for desk in cards),
            "longest_wait_since": min((row["started_at"] for row in ringing), default=None),
            "talking": sum(desk["talking"] for desk in cards),
            "answered": summary["answered"],
            "missed": summary["missed"],
            "answer_rate": summary["answer_rate"],
            "service_level": round(len(within) / len(answered), 4) if answered else None,
            "ring_avg": summary["ring_avg"],
            "talk_avg": summary["talk_avg"],
            "no_end_seen": sum(desk["no_end_seen"] for desk in cards),
        },
        "service_level_seconds": settings.service_level_seconds,
        "lost_after_seconds": settings.wallboard_lost_after,
        "thresholds": thresholds_of(settings.wallboard_thresholds),
        "desks": cards,
        "recent": recent,
        "chart": chart_of(rows, zone, now),
        "next_change": format_time(min(deadlines)) if deadlines else None,
    }


class Wallboard(CallConsumer):
    """The supervisor's live wallboard: today's calls and every desk's state (tcx-bridge wallboard)."""

    name = "wallboard"
    batch_merge = True  # on_record only marks the snapshot stale

    def __init__(self, settings: Settings, *, masked: bool = False) -> None:
        super().__init__(settings)
        self.database = open_store(settings, "wallboard", wait=True)
        self.masked = masked
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.current: dict[str, Any] = {}
        self._dirty = True
        self._next_refresh = 0.0
        self._lock = threading.Lock()
        self._contacts_path = sqlite_path(settings, "contacts")
        self._contacts: Any = None

    def on_record(self, event: CallEvent, record: dict[str, Any], context: Context) -> str:
        self._dirty = True
        return "shown"

    def contact_name(self, number: str | None) -> str | None:
        """The contact the CRM's store has for number (the same lookup as a screen pop)."""
        read = normalise(number, self.settings.region)
        if read.e164 is None:
            return None
        if self._contacts is None:
            if not self.settings.store_url and not self._contacts_path.exists():
                return None
            from consumers.crm.contacts import open_contacts

            self._contacts = open_contacts(self.settings)
        found = self._contacts.lookup(read.e164)
        return found.name if found else None

    def refresh(self) -> dict[str, Any]:
        with self._lock:
            self.current = snapshot(
                self.store, self.settings, masked=self.masked, contact_name=self.contact_name
            )
        for listener in list(self.listeners):
            listener(self.current)
        return self.current

    def tick(self, broker: Any, settings: Settings) -> None:
        now = time.monotonic()
        if self._dirty or now >= self._next_refresh:
            self._dirty = False
            current = self.refresh()
            wait = REFRESH
            if current.get("next_change"):  # a call turns "no end seen" then, without an event
                due = parse_time(current["next_change"]) - datetime.now(UTC)
                wait = min(wait, max(TICK, due.total_seconds() + TICK))
            self._next_refresh = now + wait
