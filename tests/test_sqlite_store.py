"""The SQLite store: a COMMIT left to finish behind (a backfill's batches), and the page cache."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from bridge.errors import StoreUnavailableError
from consumers.store.core import SqliteStore, open_database, open_sqlite, transaction

# a foreign key checked at COMMIT: the one way to make SQLite's COMMIT itself fail on purpose
DEFERRED = """
CREATE TABLE parents (id INTEGER PRIMARY KEY);
CREATE TABLE children (id INTEGER PRIMARY KEY,
    parent INTEGER REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED);
"""


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    opened = open_sqlite(tmp_path / "s.sqlite3", "t")
    opened.connection.executescript(DEFERRED)
    opened.execute("PRAGMA foreign_keys = ON")
    return opened


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    other = sqlite3.connect(path)
    try:
        return [tuple(row) for row in other.execute(sql)]
    finally:
        other.close()


def test_a_commit_left_behind_is_durable_once_the_store_is_used_again(
    store: SqliteStore, tmp_path: Path
) -> None:
    for n in range(3):
        with store.transaction(behind=True):
            store.execute("INSERT INTO processed (event_id) VALUES (?)", (f"e{n}",))
    # the next use waits for the last COMMIT: its row is there, and a new transaction can begin
    assert [row[0] for row in store.execute("SELECT event_id FROM processed ORDER BY event_id")] == [
        "e0",
        "e1",
        "e2",
    ]
    with store.transaction(behind=True):
        store.execute("INSERT INTO processed (event_id) VALUES ('e3')")
    store.close()  # waits for it too
    assert rows(tmp_path / "s.sqlite3", "SELECT count(*) FROM processed") == [(4,)]


def test_a_commit_that_fails_behind_is_raised_at_the_next_use_and_undone(
    store: SqliteStore, tmp_path: Path
) -> None:
    with store.transaction(behind=True):
        store.execute("INSERT INTO processed (event_id) VALUES ('lost')")
        store.execute("INSERT INTO children (id, parent) VALUES (1, 99)")  # no parent 99: COMMIT fails
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        store.execute("SELECT 1")
    store.settle()  # raised once: nothing left to wait for
    # rolled back, and the store goes on
    assert store.execute("SELECT count(*) FROM processed").fetchone()[0] == 0
    with store.transaction():
        store.execute("INSERT INTO processed (event_id) VALUES ('kept')")
    assert rows(tmp_path / "s.sqlite3", "SELECT event_id FROM processed") == [("kept",)]


def test_settle_raises_the_failure_of_a_commit_left_behind(store: SqliteStore) -> None:
    with store.transaction(behind=True):
        store.execute("INSERT INTO children (id, parent) VALUES (1, 99)")
    with pytest.raises(sqlite3.IntegrityError):
        store.settle()


def test_a_plugins_plain_connection_always_commits_before_the_block_ends(tmp_path: Path) -> None:
    connection = open_database(tmp_path / "p.sqlite3", DEFERRED)
    connection.execute("PRAGMA foreign_keys = ON")
    # each call wraps the connection anew: no wrapper could wait for a COMMIT left behind
    with pytest.raises(sqlite3.IntegrityError), transaction(connection, behind=True):
        connection.execute("INSERT INTO children (id, parent) VALUES (1, 99)")
    with transaction(connection, behind=True):
        connection.execute("INSERT INTO processed (event_id) VALUES ('at-once')")
    assert rows(tmp_path / "p.sqlite3", "SELECT event_id FROM processed") == [("at-once",)]


def test_a_store_keeps_32_mib_of_pages_in_memory(tmp_path: Path) -> None:
    # random event ids touch a page of the processed index each: the default 2 MiB re-read them from disk
    connection = open_database(tmp_path / "c.sqlite3")
    assert connection.execute("PRAGMA cache_size").fetchone()[0] == -32768


def test_without_a_thread_to_be_had_the_commit_runs_at_once(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with pytest.raises(sqlite3.IntegrityError), store.transaction(behind=True):  # raised by the block itself
        store.execute("INSERT INTO children (id, parent) VALUES (1, 99)")
    with store.transaction(behind=True):
        store.execute("INSERT INTO processed (event_id) VALUES ('at-once')")
    store.settle()  # nothing left behind
    assert store.execute("SELECT event_id FROM processed").fetchall()[0][0] == "at-once"


class FailingCommit:
    """A connection whose COMMIT fails as on a full disk (SQLite's own error); the rest goes through."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, *params: object) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self.connection.execute(sql, *params)

    def __getattr__(self, name: str) -> object:
        return getattr(self.connection, name)


def test_a_commit_that_cannot_be_written_is_a_store_away_for_now(store: SqliteStore, tmp_path: Path) -> None:
    real = store._connection
    store._connection = FailingCommit(real)  # type: ignore[assignment]
    with pytest.raises(StoreUnavailableError, match=r"could not commit: database or disk is full"):
        with store.transaction():
            store.execute("INSERT INTO processed (event_id) VALUES ('full')")
    store._connection = real
    with store.transaction():  # rolled back: a new transaction begins
        store.execute("INSERT INTO processed (event_id) VALUES ('later')")
    assert rows(tmp_path / "s.sqlite3", "SELECT event_id FROM processed") == [("later",)]
