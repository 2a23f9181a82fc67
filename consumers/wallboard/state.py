"""The wallboard's board: one local day's calls as the page shows them, kept record by record.

``Board.load`` reads the day from the store (its figures by the calls_daily
query); ``Board.apply`` takes one merged record (new, updated, or found to be of
another day) and updates the sums, desks, chart and recent list by it alone;
``Board.view`` is the snapshot at a moment, made from the open calls.
:func:`snapshot` is the board read from the store afresh: what the kept board
must equal (tests/test_wallboard_state.py). The figures have one definition,
calls_daily's: each record adds its share of the view's sums (:func:`daily_terms`)
and rollup() makes the rates, as for ``tcx-bridge report``.

One story: every open call is classified once (``live``): ringing, talking,
dialing, or -- no event for ``wallboard_lost_after`` -- "no end seen", never live
again. The desk cards count their calls from it and the ringing/talking tiles
are the sums of the cards, so the two always agree.
"""

from __future__ import annotations

import bisect
import functools
import os
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from bridge.config import Settings
from bridge.events import format_time, parse_time
from consumers.analytics.calls import other_party
from consumers.analytics.report import FIRST_MOMENT, MICRO, Selection, rollup
from consumers.analytics.settings import ANALYTICS
from consumers.numbers import display
from consumers.store.core import Store
from consumers.store.schema import daily_select
from consumers.wallboard.settings import WALLBOARD

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


def live(row: dict[str, Any], lost_before: str) -> str | None:
    """What an open call is now: ringing, talking, dialing, NO_END (lost); None once ended.

    lost_before: a wire time (they order as text, as in the store's queries).
    """
    if row["ended_at"]:
        return None
    last = row["connected_at"] or row["started_at"]
    if last is None or last < lost_before:
        return NO_END
    if row["connected_at"]:
        return "talking"
    return "dialing" if row["direction"] == "outbound" else "ringing"


# calls_daily's sums (consumers/schema.py), in the order daily_terms gives one record's share of them
DAILY_TERMS = ("calls", "inbound_answered", "inbound_missed", "inbound_within_service_level", "ring_count",
               "ring_microseconds_sum", "talk_count", "talk_microseconds_sum", "outbound_dialed",
               "outbound_connected", "outbound_talk_count", "outbound_talk_microseconds_sum")  # fmt: skip


def _micro(seconds: float) -> int:
    return round(seconds * MICRO)


def daily_terms(row: dict[str, Any], service_level: float) -> tuple[int, ...]:
    """One record's share of the calls_daily sums: the view's FILTER clauses, for one row.

    service_level: the seconds of the store's ``service_level`` row. Summed over
    a day's records this is the calls_daily query summed over that day
    (tests/test_wallboard_state.py holds the two together on SQLite and PostgreSQL).
    """
    inbound = row["direction"] != "outbound"
    answered = bool(row["answered"])
    ring, talk = row["ring_seconds"], row["talk_seconds"]
    rang = inbound and answered and ring is not None
    talked = inbound and answered and talk is not None
    out_talked = not inbound and answered and talk is not None
    return (
        1,
        int(inbound and answered),
        int(inbound and not answered and row["ended_at"] is not None),
        int(rang and ring <= service_level),
        int(rang),
        _micro(ring) if rang else 0,
        int(talked),
        _micro(talk) if talked else 0,
        int(not inbound),
        int(not inbound and answered),
        int(out_talked),
        _micro(talk) if out_talked else 0,
    )


def figures(sums: dict[str, int]) -> dict[str, Any]:
    """The day's tiles from calls_daily sums, as ``tcx-bridge report`` makes them (rollup)."""
    summary = rollup([sums], [])
    within, rings = sums["inbound_within_service_level"], sums["ring_count"]
    return {
        "answered": summary["answered"],
        "missed": summary["missed"],
        "answer_rate": summary["answer_rate"],
        "service_level": round(within / rings, 4) if rings else None,  # the view's within / ring_count
        "ring_avg": summary["ring_avg"],
        "talk_avg": summary["talk_avg"],
    }


def _first(row: dict[str, Any]) -> str:
    """The record's first moment (FIRST_MOMENT): what places it in a day."""
    return str(row["started_at"] or row["connected_at"] or row["ended_at"])


def _latest(row: dict[str, Any]) -> str:
    return max(str(t) for t in (row["started_at"], row["connected_at"], row["ended_at"]) if t)


def _recent_key(row: dict[str, Any]) -> tuple[str, int]:
    """The order of the recent list (newest last): started (else ended), then id."""
    return (row["started_at"] or row["ended_at"] or "", row["id"])


class Board:
    """One day's calls as the page shows them: load() once, apply() each record, view() each change."""

    def __init__(self, settings: Settings, day: date, service_level: float) -> None:
        self.settings = settings
        self.zone = zone_of(settings)
        self.day = day
        midnight = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        self.since = format_time(midnight)
        self.until = format_time(datetime.combine(day + timedelta(days=1), midnight.timetz()))
        self.service_level = service_level
        self.rows: dict[int, dict[str, Any]] = {}
        self.sums = dict.fromkeys(DAILY_TERMS, 0)
        self.open: dict[int, dict[str, Any]] = {}  # records with no end yet (live, or lost)
        self.desks: dict[str, dict[int, str]] = {}  # desk -> its records' latest moments
        self.last: dict[str, str] = {}  # desk -> the latest of them
        self.slots = [0] * 96  # calls per 15 minutes, by first moment
        self.order: list[tuple[str, int]] = []  # _recent_key of every record, sorted
        self.shown: dict[str | None, str | None] = {}  # number -> as the page writes it
        self.labels: list[str] = []  # the chart's slots, as wire times
        self._slots_of: dict[str, int] = {}  # first moment -> its slot
        self._chart: tuple[tuple[int, ...], list[dict[str, Any]]] = ((), [])  # (slots and hour, chart)
        self.options = WALLBOARD.of(settings)
        self.service_level_seconds = ANALYTICS.of(settings).service_level_seconds
        self.thresholds = self.options.wallboard_thresholds.as_dict()  # parsed at load

    @classmethod
    def load(cls, store: Store, settings: Settings, day: date) -> Board:
        """The day as the store has it: its records, and its figures by the calls_daily query."""
        seconds = store.execute("SELECT seconds FROM service_level").fetchone()["seconds"]
        board = cls(settings, day, seconds)
        where, params = Selection(since=board.since, until=board.until).where()
        query = f"SELECT * FROM {store.calls_table} {where} ORDER BY {FIRST_MOMENT}, id"
        for row in store.execute(query, params):
            board._add({**dict(row), "answered": bool(row["answered"])}, counted=False)
        for row in store.execute(daily_select(store.dialect, store.calls_table, where), params):
            for name in DAILY_TERMS:
                board.sums[name] += row[name]
        return board

    def apply(self, record: dict[str, Any]) -> None:
        """Take one merged record: it replaces the one of its id; it counts if its first moment is today."""
        key = record.get("id")
        if key is None:
            return  # merged twice in one batch (PostgreSQL): the first of them, with its id, is this state
        old = self.rows.get(key)
        if old is not None:
            self._remove(old)
        row = {**record, "answered": bool(record["answered"])}
        if self.since <= _first(row) < self.until:
            self._add(row, counted=True)

    def _add(self, row: dict[str, Any], *, counted: bool) -> None:
        key = row["id"]
        self.rows[key] = row
        if counted:
            for name, value in zip(DAILY_TERMS, daily_terms(row, self.service_level), strict=True):
                self.sums[name] += value
        if not row["ended_at"]:
            self.open[key] = row
        latest = _latest(row)
        self.desks.setdefault(row["desk"], {})[key] = latest
        self.last[row["desk"]] = max(self.last.get(row["desk"], latest), latest)
        self.slots[self._slot(row)] += 1
        bisect.insort(self.order, _recent_key(row))

    def _remove(self, row: dict[str, Any]) -> None:
        key = row["id"]
        del self.rows[key]
        for name, value in zip(DAILY_TERMS, daily_terms(row, self.service_level), strict=True):
            self.sums[name] -= value
        self.open.pop(key, None)
        desk = row["desk"]
        moments = self.desks[desk]
        if moments.pop(key) == self.last[desk]:
            self.last[desk] = max(moments.values(), default="")
        if not moments:
            del self.desks[desk], self.last[desk]
        self.slots[self._slot(row)] -= 1
        del self.order[bisect.bisect_left(self.order, _recent_key(row))]

    def _slot(self, row: dict[str, Any]) -> int:
        moment = _first(row)
        if moment not in self._slots_of:
            first = parse_time(moment).astimezone(self.zone)
            self._slots_of[moment] = first.hour * 4 + first.minute // 15
        return self._slots_of[moment]

    def chart(self, now: datetime) -> list[dict[str, Any]]:
        """Calls per 15 minutes (by their first moment, local time), from the first busy hour to now."""
        local_now = now.astimezone(self.zone)
        day = self.day
        key = (*self.slots, local_now.hour)
        if self._chart[0] == key:
            return self._chart[1]
        busy = [i for i, count in enumerate(self.slots) if count]
        first_hour = max(0, min([local_now.hour - CHART_HOURS + 1, *(i // 4 for i in busy[:1])]))
        last_hour = min(23, max([local_now.hour, *(i // 4 for i in busy[-1:])]))
        if not self.labels:
            self.labels = [
                format_time(datetime(day.year, day.month, day.day, i // 4, i % 4 * 15, tzinfo=self.zone))
                for i in range(96)
            ]
        chart = [
            {"at": self.labels[i], "calls": self.slots[i]} for i in range(first_hour * 4, last_hour * 4 + 4)
        ]
        self._chart = (key, chart)  # shared by the snapshots until it changes
        return chart

    def caller(self, row: dict[str, Any], masked: bool) -> str | None:
        """The other party's number as the page writes it (national, else international)."""
        number = other_party(row)
        if number not in self.shown:
            self.shown[number] = display(number, self.settings.region)
        return mask(self.shown[number]) if masked else self.shown[number]

    def view(
        self,
        now: datetime,
        *,
        masked: bool = False,
        contact_name: Callable[[str | None], str | None] = lambda _: None,
    ) -> dict[str, Any]:
        """Everything the page shows at now (a moment of the board's day)."""
        options = self.options
        lost_after = timedelta(seconds=options.wallboard_lost_after)
        lost_before = format_time(now - lost_after)
        states = {key: live(row, lost_before) for key, row in self.open.items()}
        cards = self.cards(states, now, masked, contact_name)
        ringing = [self.open[key] for key, state in states.items() if state == "ringing"]
        lasts = [  # of the live calls: each turns "no end seen" lost_after after it
            self.open[key]["connected_at"] or self.open[key]["started_at"]
            for key, state in states.items()
            if state in ("ringing", "talking", "dialing")
        ]
        return {
            "day": self.day.isoformat(),
            "timezone": zone_name(self.zone),
            "locale": options.wallboard_locale,
            "now": format_time(now),
            "tiles": {
                "ringing": sum(desk["ringing"] for desk in cards),
                "longest_wait_since": min((row["started_at"] for row in ringing), default=None),
                "talking": sum(desk["talking"] for desk in cards),
                **figures(self.sums),
                "no_end_seen": sum(desk["no_end_seen"] for desk in cards),
            },
            "service_level_seconds": self.service_level_seconds,
            "lost_after_seconds": options.wallboard_lost_after,
            "thresholds": self.thresholds,
            "desks": cards,
            "recent": self.recent(states, masked, contact_name),
            "chart": self.chart(now),
            "next_change": format_time(parse_time(min(lasts)) + lost_after) if lasts else None,
        }

    def cards(
        self,
        states: dict[int, str | None],
        now: datetime,
        masked: bool,
        contact_name: Callable[[str | None], str | None],
    ) -> list[dict[str, Any]]:
        """Every desk of the day, by name: its state, since when, its counts, the call it shows."""
        desks: dict[str, dict[str, Any]] = {}
        for name, last in self.last.items():
            desks[name] = {"desk": name, "state": "idle", "since": last, "last": last, "ringing": 0,
                           "talking": 0, "no_end_seen": 0}  # fmt: skip
        # the call a card shows: the longest-waiting caller, else the longest talk
        shown: dict[str, tuple[tuple[bool, str, str, int], str, dict[str, Any]]] = {}
        for key, row in self.open.items():
            state = states[key]
            if state == NO_END:
                desks[row["desk"]]["no_end_seen"] += 1
            if state not in ("ringing", "talking"):
                continue
            desks[row["desk"]][state] += 1
            since = row["started_at"] if state == "ringing" else row["connected_at"]
            rank = (state == "talking", since, _first(row), key)
            if row["desk"] not in shown or rank < shown[row["desk"]][0]:
                shown[row["desk"]] = (rank, state, row)
        for (_, since, _, _), state, row in shown.values():
            desks[row["desk"]] |= {"state": state, "since": since, "caller": self.caller(row, masked),
                                   "contact": contact_name(other_party(row))}  # fmt: skip
        quiet = format_time(now - timedelta(minutes=self.options.desk_idle_minutes))
        for desk in desks.values():
            if desk["state"] == "idle" and desk["last"] < quiet:
                desk["state"] = "quiet"
        return sorted(desks.values(), key=lambda d: d["desk"])

    def recent(
        self, states: dict[int, str | None], masked: bool, contact_name: Callable[[str | None], str | None]
    ) -> list[dict[str, Any]]:
        """The day's last 20 calls, newest first, with their outcome."""
        found = []
        for _, key in reversed(self.order[-20:]):
            row = self.rows[key]
            outcome = states.get(key) or ("answered" if row["answered"] else "missed")
            if row["direction"] == "outbound" and row["ended_at"]:
                outcome = "connected" if row["answered"] else "not connected"
            found.append({
                "time": row["started_at"] or row["ended_at"], "desk": row["desk"],
                "direction": row["direction"], "caller": self.caller(row, masked),
                "contact": contact_name(other_party(row)), "outcome": outcome,
                "ring": row["ring_seconds"], "talk": row["talk_seconds"],
            })  # fmt: skip
        return found


def day_of(settings: Settings, now: datetime) -> date:
    """The local day (``timezone``) now is in."""
    return now.astimezone(zone_of(settings)).date()


def snapshot(
    store: Store,
    settings: Settings,
    *,
    now: datetime | None = None,
    masked: bool = False,
    contact_name: Callable[[str | None], str | None] = lambda _: None,
) -> dict[str, Any]:
    """Everything the page shows, recomputed from the store's call records."""
    now = now or datetime.now(UTC)
    return Board.load(store, settings, day_of(settings, now)).view(
        now, masked=masked, contact_name=contact_name
    )
