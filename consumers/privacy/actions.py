"""What ``tcx-bridge privacy`` does on its machine: report, forget and sweep, store by store.

The places one machine reaches: every SQLite file of its data dir (the
consumers', the contacts', a desk's ``agent.sqlite3``, a plugin's), the
PostgreSQL database of ``store_url``, the outbox and the log files of its data
dir, and (report only: nothing can be erased in them) the dead-letter queues.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge.config import Settings
from bridge.topology import DIAL_RESULTS_MAX_AGE, dial_results_queue
from bridge.transport import Broker
from consumers.privacy import files, stores
from consumers.privacy.forms import Forms, find_in_text
from consumers.privacy.settings import options_of
from consumers.privacy.sweep import sweep_dials, sweep_store
from consumers.store.core import SqliteStore, Store


def sqlite_files(settings: Settings) -> list[Path]:
    directory = Path(settings.data_dir)
    return sorted(directory.glob("*.sqlite3")) if directory.is_dir() else []


@contextmanager
def opened(settings: Settings) -> Iterator[list[tuple[str, Store]]]:
    """(place name, store) of every store this machine reaches; closed at the end."""
    found: list[tuple[str, Store]] = []
    try:
        for path in sqlite_files(settings):
            connection = sqlite3.connect(path, timeout=30, isolation_level=None)
            connection.row_factory = sqlite3.Row
            found.append((f"sqlite:{path.name}", SqliteStore(connection, str(path), path.stem)))
        if settings.store_url:
            from consumers.store.postgres import PostgresStore

            found.append(("postgresql", PostgresStore(settings.store_url, "privacy", migrate=False)))
        yield found
    finally:
        for _, store in found:
            store.close()


def report(settings: Settings, forms: Forms, broker: Broker | None = None) -> list[dict[str, Any]]:
    """Every place that holds the number, with what it holds there (rows, file lines, messages)."""
    found: list[dict[str, Any]] = []
    with opened(settings) as reached:
        for name, store in reached:
            for hit in stores.find(store, forms):
                place = f"{name}/{hit.table}"
                if not found or found[-1]["place"] != place:
                    found.append({"place": place, "kind": "store", "rows": []})
                found[-1]["rows"].append({k: _plain(v) for k, v in hit.row.items()})
    for path, lines in files.find(settings, forms).items():
        found.append({"place": str(path), "kind": "file", "lines": lines})
    if broker is not None:
        found += queues_holding(settings, broker, forms)
    return found


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, int | float | str | bool) else str(value)


def dead_queues(settings: Settings) -> list[str]:
    from bridge.inventory import queues  # the registered consumers' names

    return [settings.dead_queue(name) for _, name, _ in queues(settings, [])]


def queues_holding(settings: Settings, broker: Broker, forms: Forms) -> list[dict[str, Any]]:
    """The dead-letter queues' messages that hold the number (left in their queues)."""
    found = []
    for queue in dead_queues(settings):
        if broker.queue_info(queue) is None:
            continue
        bodies = [d.body.decode("utf-8", "replace") for d in broker.browse(queue)]
        held = [body for body in bodies if find_in_text(body, forms)]
        if held:
            found.append({"place": f"queue:{queue}", "kind": "queue", "messages": held})
    return found


def forget(settings: Settings, forms: Forms, *, dry_run: bool = False) -> dict[str, int]:
    """Erase the number in every store and file this machine reaches; rows or occurrences per place."""
    counts: dict[str, int] = {}
    with opened(settings) as reached:
        for name, store in reached:
            if dry_run:
                for hit in stores.find(store, forms):
                    place = f"{name}/{hit.table}"
                    counts[place] = counts.get(place, 0) + 1
                continue
            for table, rows in stores.erase(store, forms).items():
                counts[f"{name}/{table}"] = rows
    if dry_run:
        for path in files.find(settings, forms):
            place = "outbox" if settings.outbox_dir in path.parents else "logs"
            counts[place] = counts.get(place, 0) + 1
        return counts
    return counts | files.erase(settings, forms)


def not_erasable(settings: Settings, now: datetime | None = None) -> list[dict[str, str]]:
    """What keeps the number out of reach of an erasure, and by when retention removes it."""
    now = now or datetime.now(UTC)

    def by(seconds: float | None) -> str:
        return (
            "never (no retention set)"
            if seconds is None
            else (now + timedelta(seconds=seconds)).date().isoformat()
        )

    found = [
        {
            "place": f"queue:{settings.namespace}.dead.*",
            "until": by(settings.retention_dead),
            "why": "dead letters cannot be changed in a queue; retention_dead (x-message-ttl) drops them",
        },
        {
            "place": f"stream:{dial_results_queue(settings)}",
            "until": by(86400.0 * int(DIAL_RESULTS_MAX_AGE[:-1])),
            "why": "a stream is append-only; its max-age drops whole segments",
        },
        {
            "place": f"queue:{settings.unrouted_exchange}",
            "until": "when an operator purges it",
            "why": "events no consumer was bound for; nothing reads them",
        },
    ]
    history = _history_max_age(settings)
    if history is not None:
        found.insert(
            1,
            {
                "place": f"stream:{settings.namespace}.history",
                "until": by(history),
                "why": "a stream is append-only; history_max_age drops whole segments",
            },
        )
    return found


def _history_max_age(settings: Settings) -> float | None:
    """history_max_age of the history section (issue 23), in seconds, when that section is loaded."""
    for options in settings.options.values():
        value = getattr(options, "history_max_age", None)
        if isinstance(value, int | float):
            return float(value)
    return None


def sweep(settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Apply every retention to every store and log file this machine reaches; rows or files per place."""
    now = now or datetime.now(UTC)
    options = options_of(settings)
    counts: dict[str, int] = {}
    with opened(settings) as reached:
        for name, store in reached:
            if isinstance(store, SqliteStore) and store.consumer == "agent":
                dials = sweep_dials(store.connection, options, now)
                if dials:
                    counts[f"{name}/dials"] = dials
                continue
            consumers = (
                ("analytics", "crm", "wallboard") if store.dialect == "postgresql" else (store.consumer,)
            )
            for consumer in consumers:
                store.calls_table = _calls_table(store, consumer)
                for table, rows in sweep_store(store, consumer, options, now).items():
                    counts[f"{name}/{table}"] = counts.get(f"{name}/{table}", 0) + rows
    logs = files.sweep_logs(settings, now)
    if logs:
        counts["logs"] = logs
    return counts


def _calls_table(store: Store, consumer: str) -> str:
    if store.dialect == "sqlite":
        return "calls"
    from consumers.store.postgres import calls_table

    return calls_table(consumer)
