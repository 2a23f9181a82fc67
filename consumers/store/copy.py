"""``tcx-bridge store copy``: move an existing SQLite history into PostgreSQL.

The source is a data dir (its analytics, crm, wallboard, contacts and callbacks files) or
one of those files. Each file's rows go to their PostgreSQL tables with their
ids (so journal entries keep pointing at their call records), the processed
event ids with them (a redelivered event stays a duplicate after the move),
all in one transaction. The target tables must be empty: copying into live
data would mix two histories' ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from bridge.errors import StoreError
from consumers.store.core import SQLITE_STORES, Store, open_sqlite
from consumers.store.postgres import calls_table
from consumers.store.schema import calls_table_ddl

BATCH = 1000


class Copied(NamedTuple):
    table: str
    rows: int


def sources(path: Path) -> dict[str, Path]:
    """consumer -> SQLite file, for a data dir or one file."""
    if path.is_dir():
        found = {name: path / f"{name}.sqlite3" for name in SQLITE_STORES}
        found = {name: file for name, file in found.items() if file.exists()}
        if not found:
            raise StoreError(f"{str(path)!r} holds no tcx-bridge store (analytics.sqlite3, crm.sqlite3, ...)")
        return found
    if not path.exists():
        raise StoreError(f"{str(path)!r} does not exist; give a data dir or one of its .sqlite3 files")
    names = {f"{name}.sqlite3": name for name in SQLITE_STORES}
    if path.name not in names:
        raise StoreError(
            f"{str(path)!r} is not a tcx-bridge store; expected one of {', '.join(sorted(names))}"
        )
    return {names[path.name]: path}


def _tables(consumer: str) -> list[tuple[str, str]]:
    """(SQLite table, PostgreSQL table) of one consumer's file; their columns come from the migrations."""
    if consumer == "contacts":
        return [("contacts", "contacts")]
    found = [("calls", calls_table(consumer))]
    if consumer == "crm":
        found.append(("journal", "journal"))
    if consumer == "callbacks":
        found.append(("callbacks", "callbacks"))
    return found


def _columns(sqlite: Store, from_table: str, target: Store, table: str) -> tuple[str, ...]:
    """The columns both tables have (both made by the migrations), id first, in the source's order."""
    source = [row["name"] for row in sqlite.execute(f"PRAGMA table_info({from_table})")]
    known = {
        row["column_name"]
        for row in target.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
    }
    shared = [column for column in source if column in known]
    return tuple(sorted(shared, key=lambda column: column != "id"))


def copy(source: Path, target: Store) -> list[Copied]:
    """Copy the SQLite history at source into target (PostgreSQL); what was copied, per table."""
    files = sources(source)
    copied: list[Copied] = []
    with target.transaction():
        for consumer in files:
            if consumer == "callbacks":  # its call records' table is made on demand (a plugin's way)
                target.script(calls_table_ddl("postgresql", calls_table(consumer)))
            for _, table in _tables(consumer):
                held = target.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"]
                if held:
                    raise StoreError(
                        f"table {table!r} in {target.name} already holds {held} row(s); "
                        "store copy fills an empty database only"
                    )
        for consumer, path in files.items():
            sqlite = open_sqlite(path, consumer)
            try:
                for from_table, table in _tables(consumer):
                    columns = _columns(sqlite, from_table, target, table)
                    copied.append(Copied(table, _copy_rows(sqlite, from_table, target, table, columns)))
                if consumer != "contacts":
                    ids = [row["event_id"] for row in sqlite.execute("SELECT event_id FROM processed")]
                    for start in range(0, len(ids), BATCH):
                        target.execute(
                            "INSERT INTO processed (consumer, event_id) SELECT ?, unnest(?::text[]) "
                            "ON CONFLICT DO NOTHING",
                            (consumer, ids[start : start + BATCH]),
                        )
                    copied.append(Copied(f"processed ({consumer})", len(ids)))
                if consumer == "analytics":
                    seconds = sqlite.execute("SELECT seconds FROM service_level").fetchone()["seconds"]
                    target.execute("UPDATE service_level SET seconds = ?", (seconds,))
            finally:
                sqlite.close()
    return copied


def _copy_rows(sqlite: Store, from_table: str, target: Store, table: str, columns: tuple[str, ...]) -> int:
    rows = sqlite.execute(f"SELECT {', '.join(columns)} FROM {from_table} ORDER BY 1").fetchall()
    booleans = {"answered"}
    values = [[bool(row[c]) if c in booleans else row[c] for c in columns] for row in rows]
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    for start in range(0, len(values), BATCH):
        target.executemany(sql, values[start : start + BATCH])
    if columns[0] == "id":  # new rows continue after the copied ids
        target.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
        )
    return len(values)
