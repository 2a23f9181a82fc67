"""Which desks are idle, and auto-assignment (``callback_assign = "auto"``): round robin over them.

A desk is idle as the wallboard shows it (consumers.wallboard.state): seen within
``desk_idle_minutes`` (else it is quiet), with no call ringing or talking; a desk
whose callback dial is out counts as busy too. Round robin: the next idle desk
after the one that was given a task last; never the desk a task had before
(a task whose dial went out unanswered goes to another desk).
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Any

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.events import format_time
from consumers.callbacks import tasks
from consumers.store.core import Store
from consumers.wallboard.state import live, zone_of

SEEN_HOURS = 12  # call records this recent tell the desks' states
DESK_IDLE_MINUTES = 15.0  # the wallboard's defaults, when its settings are not loaded
LOST_AFTER = 1800.0
REASSIGN = ("no answer", *tasks.UNDIALED)  # the task's desk tried: the next try goes to another desk


def zone(settings: Settings) -> tzinfo:
    """The zone business hours are read in: the ``timezone`` setting (default: the machine's)."""
    return zone_of(settings)


def _wallboard(settings: Settings, name: str, default: float) -> float:
    """One of the wallboard's settings (its defaults when its section was not loaded)."""
    from consumers.wallboard.settings import WALLBOARD

    try:
        return float(getattr(WALLBOARD.of(settings), name))
    except ConfigError:
        return default


def desk_states(store: Store, settings: Settings, now: datetime) -> dict[str, str]:
    """Every desk seen lately: idle, quiet, ringing or talking (the wallboard's card states)."""
    since = format_time(now - timedelta(hours=SEEN_HOURS))
    lost_before = format_time(
        now - timedelta(seconds=_wallboard(settings, "wallboard_lost_after", LOST_AFTER))
    )
    quiet = format_time(now - timedelta(minutes=_wallboard(settings, "desk_idle_minutes", DESK_IDLE_MINUTES)))
    rows = store.execute(
        f"SELECT * FROM {store.calls_table} WHERE coalesce(ended_at, connected_at, started_at) >= ?", (since,)
    )
    last: dict[str, str] = {}
    busy: dict[str, str] = {}
    for row in map(dict, rows):
        moment = max(filter(None, (row["started_at"], row["connected_at"], row["ended_at"])))
        last[row["desk"]] = max(last.get(row["desk"], moment), moment)
        state = live(row, lost_before)
        if state in ("ringing", "talking"):
            busy[row["desk"]] = state
    return {
        desk: busy.get(desk) or ("quiet" if seen < quiet else "idle") for desk, seen in sorted(last.items())
    }


def idle_desks(store: Store, settings: Settings, now: datetime) -> list[str]:
    """The idle desks, by name; desks with a callback dial out are not."""
    dialing = {
        row["dial_desk"]
        for row in store.execute(
            "SELECT dial_desk FROM callbacks WHERE status = 'open' "
            "AND dial_state IN ('dialing', 'dialed', 'confirmed')"
        )
    }
    return [
        desk
        for desk, state in desk_states(store, settings, now).items()
        if state == "idle" and desk not in dialing
    ]


def pick(idle: list[str], last_given: str | None, before: str | None) -> str | None:
    """Round robin: the first idle desk after last_given (by name), never before (the task's last desk)."""
    choices = [desk for desk in idle if desk != before]
    if not choices:
        return None
    later = [desk for desk in choices if last_given is not None and desk > last_given]
    return (later or choices)[0]


def auto_assign(store: Store, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """Give each waiting open task (no desk, or its desk tried) to an idle desk; the tasks given."""
    tasks.lock(store)
    waiting = [
        dict(row)
        for row in store.execute("SELECT * FROM callbacks WHERE status = 'open' ORDER BY first_missed_at, id")
        if row["desk"] is None or row["dial_state"] in REASSIGN
    ]
    if not waiting:
        return []
    idle = idle_desks(store, settings, now)
    found = store.execute(
        "SELECT desk FROM callbacks WHERE assigned_at IS NOT NULL ORDER BY assigned_at DESC, id DESC LIMIT 1"
    ).fetchone()
    last_given = found["desk"] if found is not None else None
    given = []
    for row in waiting:
        desk = pick(idle, last_given, row["desk"])
        if desk is None:
            continue
        given.append(tasks.assign(store, row, desk, "auto"))
        idle.remove(desk)  # one task per idle desk a round
        last_given = desk
    return given
