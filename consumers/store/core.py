"""The consumers' stores: SQLite files in the data dir (the default) or PostgreSQL (``store_url``).

A :class:`Store` is one connection with the few operations the consumers need,
the same on both backends: ``execute`` with ``?`` placeholders (rows are
mappings, times RFC 3339 strings), transactions and savepoints, the processed
event ids that make handlers idempotent, and :meth:`Store.lock` for keys that
replicas must not merge at the same time (nothing to do in SQLite, where a
write transaction holds the whole file). PostgreSQL lives in consumers.store.postgres.

SQLite files are opened in WAL mode with ``synchronous=FULL``: a committed row
survives a crash or power cut, which is what "record it durably before acting"
and "ack only after side effects are durable" rely on.

A transaction may leave its COMMIT to finish behind (``transaction(behind=True)``):
a backfill's batch, whose stream offset commits with it and on which no ack waits.
SQLite then commits on a thread of its own (writing the WAL needs no GIL) while
the consumer reads the next deliveries; the store's next use waits for it and
raises its failure, so nothing reads or writes the file in between.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, overload

from bridge.config import Settings
from bridge.errors import ConfigError, StoreError, StoreUnavailableError, check_directory, path_problem
from consumers.store.schema import PROCESSED_SQLITE, STREAM_OFFSETS_SQLITE

SQLITE_STORES = ("analytics", "crm", "wallboard", "contacts", "callbacks")  # <data_dir>/<name>.sqlite3


class Rows(Protocol):
    """What execute returns: a cursor over mapping rows."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Store:
    """One database connection for one consumer (or a command); see the module docstring."""

    dialect: ClassVar[str]
    name: str  # the file or the redacted URL, for messages
    consumer: str
    calls_table: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    def script(self, sql: str) -> None:
        """Several statements without parameters (DDL)."""
        raise NotImplementedError

    @contextmanager
    def transaction(self, *, behind: bool = False) -> Iterator[None]:
        """One write transaction: committed when the block ends, rolled back when it raises.

        behind: the COMMIT may still be running when the block ends (SQLite; see the module); the
        store's next use waits for it, and :meth:`settle` waits for it and raises its failure.
        """
        raise NotImplementedError
        yield

    def settle(self) -> None:
        """Wait for a COMMIT left to finish behind; raise its failure (nothing when none is running)."""

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A savepoint inside the open transaction: undone alone when the block raises."""
        raise NotImplementedError
        yield

    def first_time(self, event_id: str) -> bool:
        """Record event_id as processed by this consumer; False if it already was (a duplicate).

        Call it inside the transaction that holds the event's side effects, so both commit together.
        """
        raise NotImplementedError

    def first_times(self, event_ids: Sequence[str]) -> set[str]:
        """The ids of event_ids not processed before, now recorded."""
        return {event_id for event_id in event_ids if self.first_time(event_id)}

    def returning_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[Any]:
        """An INSERT … RETURNING for each row: the row each returned, in order."""
        return [self.execute(sql, row).fetchone() for row in rows]

    def insert_ids(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[int]:
        """Insert rows (values of columns) into table, whose key is ``id``; their ids, in order."""
        values = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) RETURNING id"
        return [int(row["id"]) for row in self.returning_many(sql, rows)]

    def lock(self, keys: Iterable[str]) -> None:
        """Hold these keys until the transaction ends (replicas on one database wait for each other)."""

    def ensure(self) -> None:
        """Connect (again) if needed: StoreUnavailableError while the server is away."""

    def close(self) -> None:
        raise NotImplementedError


_IN_LIST = 500  # ids per IN (...): below SQLite's oldest limit of 999 variables


class SqliteStore(Store):
    """A SQLite file: the embedded default, one file per consumer."""

    dialect = "sqlite"

    def __init__(self, connection: sqlite3.Connection, name: str = "", consumer: str = "") -> None:
        self._connection = connection
        self.name = name
        self.consumer = consumer
        self.calls_table = "calls"
        self._behind: threading.Thread | None = None  # a COMMIT finishing on a thread of its own
        self._behind_error: BaseException | None = None

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, once a COMMIT left behind is done (its failure raised here)."""
        if self._behind is not None:
            self.settle()
        return self._connection

    def settle(self) -> None:
        thread = self._behind
        if thread is None:
            return
        thread.join()
        self._behind = None
        error, self._behind_error = self._behind_error, None
        if error is not None:
            raise error

    def _commit(self) -> None:
        """COMMIT; one that fails is rolled back (SQLite may leave it open) and raised. A full disk, an
        I/O error or a lock held too long is StoreUnavailableError: the runner waits and tries again,
        as while a database server is away (nothing was acked)."""
        try:
            self._connection.execute("COMMIT")
        except BaseException as error:
            with contextlib.suppress(sqlite3.Error):
                self._connection.execute("ROLLBACK")
            if isinstance(error, sqlite3.OperationalError):
                raise StoreUnavailableError(
                    f"store {self.name or 'sqlite'!r} could not commit: {error}"
                ) from None
            raise

    def _commit_behind(self) -> None:
        """The COMMIT of a transaction(behind=True), on its own thread; a failure is kept for settle()."""
        try:
            self._commit()
        except BaseException as error:  # noqa: BLE001  # raised at the store's next use
            self._behind_error = error

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return self.connection.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.connection.executemany(sql, rows)

    def script(self, sql: str) -> None:
        statement = ""
        for line in sql.splitlines(keepends=True):  # not executescript: it would commit the transaction
            statement += line
            if sqlite3.complete_statement(statement):
                self.connection.execute(statement)
                statement = ""

    @contextmanager
    def transaction(self, *, behind: bool = False) -> Iterator[None]:
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        if not behind:
            self._commit()
            return
        thread = threading.Thread(target=self._commit_behind, name="sqlite-commit")
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: committed here, as without behind
            self._commit()
            return
        self._behind = thread

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self.connection.execute("SAVEPOINT message")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK TO message")
            self.connection.execute("RELEASE message")
            raise
        self.connection.execute("RELEASE message")

    def insert_ids(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[int]:
        """The ids given here, the next ones after the table's highest (what SQLite would give an
        ``INTEGER PRIMARY KEY``; the write transaction holds the file), so one prepared statement
        inserts them all instead of an INSERT … RETURNING per row."""
        if not rows:
            return []
        (highest,) = self.connection.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()
        ids = list(range(highest + 1, highest + 1 + len(rows)))
        values = ", ".join("?" * (len(columns) + 1))
        self.connection.executemany(
            f"INSERT INTO {table} (id, {', '.join(columns)}) VALUES ({values})",
            [(key, *row) for key, row in zip(ids, rows, strict=True)],
        )
        return ids

    def first_time(self, event_id: str) -> bool:
        cursor = self.connection.execute(
            "INSERT INTO processed (event_id) VALUES (?) ON CONFLICT DO NOTHING", (event_id,)
        )
        return cursor.rowcount == 1

    def first_times(self, event_ids: Sequence[str]) -> set[str]:
        """The ids of event_ids not processed before, now recorded: the known ones looked up at once,
        the new ones inserted with one prepared statement (the write transaction holds the file, so
        nothing comes between; 2.5x faster than one INSERT … RETURNING per batch)."""
        wanted = list(dict.fromkeys(event_ids))
        known: set[str] = set()
        for first in range(0, len(wanted), _IN_LIST):
            chunk = wanted[first : first + _IN_LIST]
            known.update(
                row[0]
                for row in self.connection.execute(
                    f"SELECT event_id FROM processed WHERE event_id IN ({', '.join('?' * len(chunk))})", chunk
                )
            )
        fresh = [event_id for event_id in wanted if event_id not in known]
        self.connection.executemany("INSERT INTO processed (event_id) VALUES (?)", [(e,) for e in fresh])
        return set(fresh)

    def close(self) -> None:
        try:
            self.settle()
        finally:
            self._connection.close()


def open_database(path: Path, schema: str = "") -> sqlite3.Connection:
    """Open (and create) a durable SQLite database with the processed table and schema.

    A data dir that cannot be used is a StoreError naming the path and the fix.
    (The desk agent's dial records and plugins use this directly.)
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA cache_size=-32768")
        connection.executescript(PROCESSED_SQLITE + STREAM_OFFSETS_SQLITE + schema)
    except OSError as error:
        raise StoreError(path_problem(error, path.parent)) from None
    except sqlite3.DatabaseError as error:
        raise StoreError(
            f"store {str(path)!r} cannot be opened ({error}); check that the data dir exists, "
            "is a directory and is writable (TCX_BRIDGE_DATA_DIR)"
        ) from None
    return connection


def sqlite_path(settings: Settings, consumer: str) -> Path:
    """The SQLite file of a consumer's store in the data dir."""
    return Path(settings.data_dir) / f"{consumer}.sqlite3"


def open_sqlite(path: Path, consumer: str = "", *, migrate: bool = True) -> SqliteStore:
    """A SQLite store at path, migrated to the current schema (unless migrate is False).

    The SQLite half of :func:`open_store`; for a file outside the data dir (a copy's source, a test).
    """
    from consumers.store.schema import migrate as migrate_schema

    store = SqliteStore(open_database(path), str(path), consumer)
    if not migrate:
        return store
    try:
        migrate_schema(store)
    except sqlite3.DatabaseError as error:
        store.close()
        raise StoreError(f"store {str(path)!r} cannot be migrated: {error}") from None
    return store


@overload
def open_store(
    settings: Settings,
    consumer: str,
    *,
    wait: bool = ...,
    migrate: bool = ...,
    existing: Literal[False] = ...,
) -> Store: ...


@overload
def open_store(
    settings: Settings, consumer: str, *, wait: bool = ..., migrate: bool = ..., existing: bool
) -> Store | None: ...


def open_store(
    settings: Settings, consumer: str, *, wait: bool = False, migrate: bool = True, existing: bool = False
) -> Store | None:
    """The store of a consumer ("analytics", "crm", "wallboard", "contacts", or a plugin's name).

    The one way the consumers, the commands and the tools open a store by its name.
    SQLite: ``<data_dir>/<name>.sqlite3``. PostgreSQL: the shared database; a
    plugin's call records get a table of their own (``<name>_calls``).

    wait: a PostgreSQL server that is away is not an error yet (the consumer's
    runner connects when it answers); without it, StoreUnavailableError.
    migrate: False leaves the schema as found (a check that changes nothing).
    existing: a reader's store: None when its SQLite file was never written
    (the data dir is still checked: a file in its place is a StoreError).
    """
    if settings.store_url:
        try:
            from consumers.store.postgres import PostgresStore
        except ImportError:
            raise ConfigError(
                "store_url is a postgresql:// URL but the PostgreSQL driver is not installed; "
                "install it with: pip install 'tcx-bridge[postgres]'"
            ) from None
        return PostgresStore(settings.store_url, consumer, wait=wait, migrate=migrate)
    path = sqlite_path(settings, consumer)
    if existing:
        check_directory(path.parent)
        if not path.exists():
            return None
    return open_sqlite(path, consumer, migrate=migrate)


def as_store(database: Store | sqlite3.Connection | None) -> Store | None:
    """A consumer's database as a Store (plugins may still hold a plain sqlite3 connection)."""
    if isinstance(database, sqlite3.Connection):
        return SqliteStore(database)
    return database


def first_time(database: Store | sqlite3.Connection, event_id: str) -> bool:
    """Record event_id as processed (in a Store, or a plugin's sqlite3 connection); False: a duplicate."""
    store = as_store(database)
    assert store is not None
    return store.first_time(event_id)


@contextmanager
def transaction(database: Store | sqlite3.Connection | None, *, behind: bool = False) -> Iterator[None]:
    """The store's transaction; nothing without a store. behind: see Store.transaction (only for a
    Store: a plugin's plain connection gets a new wrapper at each call, which could not wait for it)."""
    store = as_store(database)
    if store is None:
        yield
        return
    with store.transaction(behind=behind and store is database):
        yield


@contextmanager
def savepoint(database: Store | sqlite3.Connection | None) -> Iterator[None]:
    """A savepoint of the store; nothing without a store."""
    store = as_store(database)
    if store is None:
        yield
        return
    with store.savepoint():
        yield
