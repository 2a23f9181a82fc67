"""Retention: each data class's rows older than its setting deleted (calls_daily kept in its archive).

    class        store (SQLite file / PostgreSQL table)                 setting               by
    calls        analytics.sqlite3 calls / calls                        retention_calls       start
    journal      crm.sqlite3 journal, calls / journal, crm_calls        retention_journal     end
    wallboard    wallboard.sqlite3 calls / wallboard_calls              retention_wallboard   start
    callbacks    a ``callbacks`` table, where one exists                retention_callbacks   closed_at
    dials        agent.sqlite3 dials (the desk)                         retention_dials       received_at
    daily        calls_daily_archive                                    retention_daily       day

Before analytics' calls of a day are deleted, the day's calls_daily rows go to
``calls_daily_archive`` (whole UTC days only, so a day is never half in each).
Each long-running consumer sweeps its own data once a day; ``tcx-bridge privacy
sweep`` sweeps every store it reaches, now.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.events import format_time
from consumers.privacy.settings import Options
from consumers.store.core import Store
from consumers.store.schema import ARCHIVE, daily_select

FIRST = "coalesce(started_at, connected_at, ended_at)"
LAST = "coalesce(ended_at, connected_at, started_at)"


def cutoff(now: datetime, seconds: float) -> str:
    """The RFC 3339 time before which rows go (the start of that UTC day: whole days only)."""
    moment = now - timedelta(seconds=seconds)
    return format_time(moment.replace(hour=0, minute=0, second=0, microsecond=0))


def _delete(store: Store, table: str, column: str, before: str) -> int:
    cast = "::timestamptz" if store.dialect == "postgresql" else ""
    return store.execute(f"DELETE FROM {table} WHERE {column} < ?{cast}", (before,)).rowcount


def has_table(store: Store, table: str) -> bool:
    if store.dialect == "sqlite":
        return store.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone() is not None
    return store.execute("SELECT to_regclass(?) AS name", (table,)).fetchone()["name"] is not None


def sweep_calls(store: Store, options: Options, now: datetime) -> dict[str, int]:
    """Analytics: archive the calls_daily rows of the days going, then delete their calls."""
    found: dict[str, int] = {}
    if options.retention_calls is not None:
        before = cutoff(now, options.retention_calls)
        cast = "::timestamptz" if store.dialect == "postgresql" else ""
        where = f"WHERE {FIRST} < ?{cast}"
        store.execute(f"INSERT INTO {ARCHIVE} {daily_select(store.dialect, 'calls', where)}", (before,))
        found["calls"] = _delete(store, "calls", FIRST, before)
    if options.retention_daily is not None:
        day = cutoff(now, options.retention_daily)[:10]
        cast = "::date" if store.dialect == "postgresql" else ""
        found[ARCHIVE] = store.execute(f"DELETE FROM {ARCHIVE} WHERE day < ?{cast}", (day,)).rowcount
    return found


def sweep_store(store: Store, consumer: str, options: Options, now: datetime | None = None) -> dict[str, int]:
    """Apply the retention of consumer's data classes to its store, in one transaction; rows per table."""
    now = now or datetime.now(UTC)
    found: dict[str, int] = {}
    with store.transaction():
        if consumer == "analytics":
            found |= sweep_calls(store, options, now)
        elif consumer == "crm" and options.retention_journal is not None:
            before = cutoff(now, options.retention_journal)
            found["journal"] = _delete(store, "journal", LAST, before)
            found[store.calls_table] = _delete(store, store.calls_table, LAST, before)
        elif consumer == "wallboard" and options.retention_wallboard is not None:
            before = cutoff(now, options.retention_wallboard)
            found[store.calls_table] = _delete(store, store.calls_table, FIRST, before)
        if options.retention_callbacks is not None and has_table(store, "callbacks"):
            found |= _sweep_callbacks(store, cutoff(now, options.retention_callbacks))
    return {table: count for table, count in found.items() if count}


def _sweep_callbacks(store: Store, before: str) -> dict[str, int]:
    """Callback tasks closed before the cutoff (the callbacks table's closed_at; open ones have none)."""
    try:
        with store.savepoint():
            return {"callbacks": _delete(store, "callbacks", "closed_at", before)}
    except Exception:  # noqa: BLE001  # another schema: its own part sweeps it
        return {}


def sweep_dials(connection: sqlite3.Connection, options: Options, now: datetime | None = None) -> int:
    """The desk's dial records received before retention_dials (finished ones; a dial in flight stays)."""
    if options.retention_dials is None:
        return 0
    before = cutoff(now or datetime.now(UTC), options.retention_dials)
    cursor = connection.execute(
        "DELETE FROM dials WHERE received_at < ? AND status NOT IN ('dialing', 'dialed')", (before,)
    )
    return int(cursor.rowcount)


def older_than(now: datetime, seconds: float | None) -> float | None:
    """A POSIX time: files last written before it go (None: kept)."""
    return None if seconds is None else (now - timedelta(seconds=seconds)).timestamp()


def describe_sweep(found: dict[str, Any]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(found.items())) or "nothing"
