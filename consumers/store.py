"""SQLite stores under the data dir, and the processed-event record that makes handlers idempotent.

Every store is opened in WAL mode with ``synchronous=FULL``: a committed row
survives a crash or power cut, which is what "record it durably before acting"
and "ack only after side effects are durable" rely on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bridge.errors import StoreError, path_problem

PROCESSED_SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (
    event_id TEXT PRIMARY KEY,
    processed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) WITHOUT ROWID;
"""


def open_database(path: Path, schema: str = "") -> sqlite3.Connection:
    """Open (and create) a durable SQLite database with the processed table and schema.

    A data dir that cannot be used is a StoreError naming the path and the fix.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.executescript(PROCESSED_SCHEMA + schema)
    except OSError as error:
        raise StoreError(path_problem(error, path.parent)) from None
    except sqlite3.DatabaseError as error:
        raise StoreError(
            f"store {str(path)!r} cannot be opened ({error}); check that the data dir exists, "
            "is a directory and is writable (TCX_BRIDGE_DATA_DIR)"
        ) from None
    return connection


def first_time(connection: sqlite3.Connection, event_id: str) -> bool:
    """Record event_id as processed; False if it already was (a duplicate).

    Call it inside the transaction (or savepoint) that holds the event's side effects,
    so that both are committed, or rolled back, together.
    """
    cursor = connection.execute("INSERT OR IGNORE INTO processed (event_id) VALUES (?)", (event_id,))
    return cursor.rowcount == 1


@contextmanager
def transaction(connection: sqlite3.Connection | None) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises; nothing without a store."""
    if connection is None:
        yield
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


@contextmanager
def savepoint(connection: sqlite3.Connection | None) -> Iterator[None]:
    """A savepoint inside the open transaction: undone alone when the block raises."""
    if connection is None:
        yield
        return
    connection.execute("SAVEPOINT message")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK TO message")
        connection.execute("RELEASE message")
        raise
    connection.execute("RELEASE message")
