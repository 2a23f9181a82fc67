"""A number in the stores: found (subject access), erased (the row kept, the number a marker), swept.

Every text column of every table is searched, not a list of known columns, so a
table another part adds (callbacks, webhooks, a plugin's) is covered the day it
appears. A value that is the number becomes ``[erased]``; a text that holds it
(a reason, a contact's JSON) has it replaced. Contacts holding the number are
deleted (they are the person's record, not a call's). SQLite files are then
vacuumed and their write-ahead log truncated, so the bytes are gone from the
files; PostgreSQL tables are vacuumed (best effort: a running transaction may
keep old row versions until autovacuum).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterator
from typing import Any, NamedTuple

from bridge.errors import TcxBridgeError
from consumers.privacy.forms import Forms, erase_in_text, find_in_text
from consumers.store.core import SqliteStore, Store

logger = logging.getLogger(__name__)
SKIPPED = frozenset({"processed", "tcx_schema", "service_level", "calls_daily_archive"})  # never a number
DELETED = frozenset({"contacts"})  # rows holding the number are deleted, not kept with a marker


class Hit(NamedTuple):
    """One row that holds the number: its table, its key for an update, the row as stored."""

    table: str
    key: Any
    row: dict[str, Any]
    columns: tuple[str, ...]  # the columns that hold it


def text_columns(store: Store) -> Iterator[tuple[str, list[str]]]:
    """(table, text columns) of every table of the store that may hold a number."""
    if store.dialect == "sqlite":
        names = [row["name"] for row in store.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in names:
            if table in SKIPPED or table.startswith("sqlite_"):
                continue
            columns = [row["name"] for row in store.execute(f'PRAGMA table_info("{table}")')]
            yield table, columns
        return
    found: dict[str, list[str]] = {}
    rows = store.execute(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' "
        "AND c.data_type IN ('text', 'jsonb', 'json', 'character varying') ORDER BY c.ordinal_position"
    )
    for row in rows:
        found.setdefault(row["table_name"], []).append(row["column_name"])
    for table in sorted(found):
        if table not in SKIPPED:
            yield table, found[table]


def _candidates(
    store: Store, table: str, columns: list[str], forms: Forms
) -> list[tuple[Any, dict[str, Any]]]:
    """(key, row) of the rows whose text columns may hold the number (checked exactly by the caller)."""
    if store.dialect == "sqlite":
        assert isinstance(store, SqliteStore)
        store.connection.create_function(
            "tcx_holds", 1, lambda value: isinstance(value, str) and bool(find_in_text(value, forms))
        )
        where = " OR ".join(f'tcx_holds("{column}")' for column in columns)
        try:
            rows = store.execute(f'SELECT rowid AS tcx_key, * FROM "{table}" WHERE {where}').fetchall()
        except sqlite3.OperationalError:  # a WITHOUT ROWID table: none of ours holds numbers
            return []
        return [(row["tcx_key"], {k: row[k] for k in row.keys() if k != "tcx_key"}) for row in rows]
    digits = "(" + "|".join(sorted(forms.digits)) + ")"
    hashes = "(" + "|".join(re.escape(value) for value in forms.hashes) + ")" if forms.hashes else None
    terms = []
    params: list[Any] = []
    for column in columns:
        terms.append(f"regexp_replace(\"{column}\"::text, '[^0-9]', '', 'g') ~ ?")
        params.append(digits)
        if hashes:
            terms.append(f'"{column}"::text ~ ?')
            params.append(hashes)
    rows = store.execute(
        f'SELECT ctid::text AS tcx_key, * FROM "{table}" WHERE {" OR ".join(terms)}', params
    ).fetchall()
    return [(row["tcx_key"], {k: v for k, v in row.items() if k != "tcx_key"}) for row in rows]


def find(store: Store, forms: Forms) -> list[Hit]:
    """Every row of the store that holds the number, with the columns that hold it."""
    hits = []
    for table, columns in text_columns(store):
        for key, row in _candidates(store, table, columns, forms):
            holding = tuple(c for c in columns if isinstance(row.get(c), str) and find_in_text(row[c], forms))
            holding += tuple(
                c
                for c in columns
                if not isinstance(row.get(c), str)
                and row.get(c) is not None
                and find_in_text(str(row[c]), forms)
            )
            if holding:
                hits.append(Hit(table, key, row, holding))
    return hits


def erase(store: Store, forms: Forms) -> dict[str, int]:
    """Erase the number in every row holding it; rows changed per table. Vacuums afterwards."""
    hits = find(store, forms)
    counts: dict[str, int] = {}
    key_column = "rowid" if store.dialect == "sqlite" else "ctid"
    cast = "" if store.dialect == "sqlite" else "::tid"
    with store.transaction():
        if store.dialect == "sqlite":
            store.execute("PRAGMA secure_delete = ON")
        for hit in hits:
            counts[hit.table] = counts.get(hit.table, 0) + 1
            if hit.table in DELETED:
                store.execute(f'DELETE FROM "{hit.table}" WHERE {key_column} = ?{cast}', (hit.key,))
                continue
            values = [_erased(hit.row[column], forms, store.dialect) for column in hit.columns]
            assignments = ", ".join(
                f'"{column}" = ?{_json_cast(hit.row[column], store)}' for column in hit.columns
            )
            store.execute(
                f'UPDATE "{hit.table}" SET {assignments} WHERE {key_column} = ?{cast}', (*values, hit.key)
            )
    if counts:
        vacuum(store, sorted(counts))
    return counts


def _erased(value: Any, forms: Forms, dialect: str) -> Any:
    if isinstance(value, str):
        return erase_in_text(value, forms)[0]
    import json

    return erase_in_text(json.dumps(value), forms)[0]  # a jsonb value (PostgreSQL): as JSON text


def _json_cast(value: Any, store: Store) -> str:
    return "::jsonb" if store.dialect == "postgresql" and not isinstance(value, str) else ""


def vacuum(store: Store, tables: list[str]) -> None:
    """Rewrite what held the erased values: SQLite's file and its write-ahead log; PostgreSQL's tables.

    A file another process holds busy past the busy timeout is left as it is, with a
    warning: the values are erased, their old bytes go at the next vacuum (run forget again).
    """
    try:
        if store.dialect == "sqlite":
            store.execute("VACUUM")
            store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return
        for table in tables:
            store.execute(f'VACUUM "{table}"')
    except (sqlite3.OperationalError, TcxBridgeError) as error:
        logger.warning(
            "store %s: erased, but not vacuumed (%s); run privacy forget again when idle", store.name, error
        )
