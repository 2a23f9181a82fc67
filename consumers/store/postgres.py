"""The PostgreSQL store (``store_url = postgresql://…``): every psycopg import lives here.

Consumers share one database: replicas of one consumer on one queue merge their
events under :meth:`PostgresStore.lock` (transaction-scoped advisory locks,
taken in sorted order so that two replicas never wait on each other in a
circle), dedupe on ``processed (consumer, event_id)``, and commit before they
ack. psycopg's errors become ours here, classified:

* the server away (refused, restarting, the connection lost): StoreUnavailableError,
  transient for the whole batch: the runner stops acking, reconnects with backoff,
  and the broker redelivers;
* a deadlock, a serialization failure, a cancelled statement: TransientError, retried;
* a login refused, a database or role that does not exist: StoreError, for an operator
  (the consumer exits with one line). libpq's connect errors carry no SQLSTATE, so these
  are told by the server's FATAL message (see PERMANENT_CONNECT);
* a missing grant, a read-only server (a failover not finished): StoreUnavailableError too,
  since every message would fail alike;
* anything else the server rejects: HandlerError, the message is dead-lettered.

Times are ``timestamptz`` in the database and RFC 3339 strings in rows, as in SQLite.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from bridge.config import redact_url
from bridge.errors import HandlerError, StoreError, StoreUnavailableError, TransientError
from bridge.events import format_time
from consumers.store.core import Rows, Store

logger = logging.getLogger(__name__)

CALLS_TABLES = {"analytics": "calls", "crm": "crm_calls", "wallboard": "wallboard_calls"}
CONNECT_TIMEOUT = 5  # seconds
OPERATOR_STATES = ("28", "3D")  # login refused; no such database
# A connection refused for good: libpq reports the server's FATAL message, without the SQLSTATE
# (English messages; a server with another lc_messages falls back to "not reachable", transient).
PERMANENT_CONNECT = (
    (r'database "([^"]*)" does not exist', "the database {0!r} does not exist; create it or fix store_url"),
    (r'role "([^"]*)" does not exist', "the role {0!r} does not exist; create it or fix store_url's user"),
    (r'password authentication failed for user "([^"]*)"', "the password of {0!r} was refused; fix it"),
    (r'(\w+) authentication failed for user "([^"]*)"', "{0} authentication of {1!r} failed; fix store_url"),
    (r"no password supplied", "the server asks for a password and store_url gives none; add it"),
    (r'role "([^"]*)" is not permitted to log in', "the role {0!r} may not log in; ALTER ROLE … LOGIN"),
    (r'permission denied for database "([^"]*)"', "no CONNECT right on the database {0!r}; GRANT CONNECT"),
    (r'no pg_hba\.conf entry for host "([^"]*)"', "pg_hba.conf has no entry for host {0!r}; add one"),
)


@lru_cache(maxsize=256)
def _translate(sql: str) -> str:
    """``?`` placeholders (shared with SQLite) as psycopg's ``%s``."""
    return sql.replace("%", "%%").replace("?", "%s")


def _row_factory(cursor: psycopg.Cursor[Any]) -> Callable[[Sequence[Any]], dict[str, Any]]:
    names = [column.name for column in cursor.description or ()]

    def make(values: Sequence[Any]) -> dict[str, Any]:
        return {
            name: format_time(value) if isinstance(value, datetime) else value
            for name, value in zip(names, values, strict=True)
        }

    return make


def calls_table(consumer: str) -> str:
    """The table of a consumer's call records: ours by name, a plugin's ``<name>_calls`` (made on demand)."""
    if consumer in CALLS_TABLES:
        return CALLS_TABLES[consumer]
    if consumer in ("", "contacts"):
        return "calls"  # commands (report, copy) read the analytics records
    return re.sub(r"[^a-z0-9_]", "_", consumer.lower()) + "_calls"


def lock_key(text: str) -> int:
    """A stable signed 64-bit advisory lock key for text (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


def _problem(error: psycopg.Error) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def refused_for_good(error: psycopg.Error) -> str | None:
    """Why a connect failed for good (no such database or role, a refused login); None: perhaps for now."""
    if error.sqlstate or not isinstance(error, psycopg.OperationalError):
        return None
    text = str(error)
    for pattern, why in PERMANENT_CONNECT:
        found = re.search(pattern, text)
        if found:
            return why.format(*(group.strip() for group in found.groups()))
    return None


class PostgresStore(Store):
    """One connection to the shared database, for one consumer (or a command)."""

    dialect = "postgresql"

    def __init__(self, url: str, consumer: str = "", *, wait: bool = False, migrate: bool = True) -> None:
        """wait: a server that is away is not an error yet; migrate: bring the schema up to date."""
        self.url = url
        self.name = redact_url(url)
        self.consumer = consumer
        self.calls_table = calls_table(consumer)
        self._connection: psycopg.Connection[dict[str, Any]] | None = None
        self._migrated = not migrate
        self._in_transaction = False
        self._savepoint = "none"  # none | pending | open
        try:
            self.ensure()
        except StoreUnavailableError as error:
            if not wait:
                raise
            logger.warning("store %s: %s; waiting for it", self.name, error)

    # connection ---------------------------------------------------------------
    def ensure(self) -> None:
        if self._connection is not None and not self._connection.closed:
            return
        self._connection = None
        with self._mapped():
            self._connection = psycopg.connect(
                self.url,
                autocommit=True,
                row_factory=_row_factory,
                connect_timeout=CONNECT_TIMEOUT,
                application_name=f"tcx-bridge {self.consumer}".strip(),
            )
        if not self._migrated:
            from consumers.store.schema import migrate

            applied = migrate(self)
            if applied:
                logger.info("store %s migrated to schema version %d", self.name, applied[-1])
            if self.calls_table not in CALLS_TABLES.values() and self.calls_table != "calls":
                from consumers.store.schema import MIGRATE_LOCK, calls_table_ddl

                with self.transaction():  # a plugin's, if missing; its replicas one at a time
                    self.execute(f"SELECT pg_advisory_xact_lock({MIGRATE_LOCK})")
                    self.script(calls_table_ddl("postgresql", self.calls_table))
            self._migrated = True

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        """psycopg's errors as ours (see the module docstring)."""
        try:
            yield
        except psycopg.Error as error:
            raise self._map(error) from None

    def _map(self, error: psycopg.Error) -> Exception:
        problem = _problem(error)
        state = error.sqlstate or ""
        broken = self._connection is None or self._connection.closed or self._connection.broken
        if state.startswith(OPERATOR_STATES):
            return StoreError(f"PostgreSQL {self.name} refused us: {problem}; check store_url")
        refused = refused_for_good(error)
        if refused:
            return StoreError(f"store_url {self.name}: {refused}")
        if broken or isinstance(
            error,
            (
                psycopg.InterfaceError,
                pg_errors.AdminShutdown,
                pg_errors.CannotConnectNow,
                pg_errors.CrashShutdown,
            ),
        ):
            self._forget()
            return StoreUnavailableError(f"PostgreSQL {self.name} is not reachable: {problem}")
        if isinstance(error, (pg_errors.InsufficientPrivilege, pg_errors.ReadOnlySqlTransaction)):
            # every message would fail alike (a grant missing, a replica promoted late): none is to blame,
            # so the batch stays unacked and the consumer retries with backoff until an operator fixes it
            return StoreUnavailableError(f"PostgreSQL {self.name} cannot be written: {problem}")
        if isinstance(
            error, (pg_errors.TransactionRollback, pg_errors.LockNotAvailable, pg_errors.QueryCanceled)
        ):
            return TransientError(f"PostgreSQL: {problem}")
        if isinstance(error, psycopg.OperationalError):
            return TransientError(f"PostgreSQL: {problem}")
        return HandlerError(f"PostgreSQL rejected it: {problem}")

    def _forget(self) -> None:
        """Drop a connection that broke: its transaction is gone with it."""
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        self._savepoint = "none"

    @property
    def _conn(self) -> psycopg.Connection[dict[str, Any]]:
        if self._connection is None:
            if self._in_transaction:  # lost inside a transaction: its work is gone with it
                raise StoreUnavailableError(f"PostgreSQL {self.name}: the connection was lost")
            self.ensure()
        assert self._connection is not None
        return self._connection

    # statements ---------------------------------------------------------------
    def _ready(self) -> psycopg.Connection[dict[str, Any]]:
        """The connection for a statement, with the pending savepoint (if any) taken first."""
        connection = self._conn
        if self._savepoint == "pending":
            connection.execute("SAVEPOINT message")
            self._savepoint = "open"
        return connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        with self._mapped():
            if not params:
                return self._ready().execute(sql.replace("%", "%%"), ())
            return self._ready().execute(_translate(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._mapped():
            self._ready().cursor().executemany(_translate(sql), rows)

    def script(self, sql: str) -> None:
        with self._mapped():
            self._ready().execute(sql)  # no parameters: several statements are fine

    def returning_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """executemany of an INSERT … RETURNING: the first row each statement returned, in order."""
        found: list[dict[str, Any]] = []
        with self._mapped():
            cursor = self._ready().cursor()
            cursor.executemany(_translate(sql), rows, returning=True)
            while True:
                found.append(cursor.fetchone())  # type: ignore[arg-type]  # one row per INSERT
                if not cursor.nextset():
                    break
        return found

    # transactions -------------------------------------------------------------
    @contextmanager
    def transaction(self, *, behind: bool = False) -> Iterator[None]:  # committed before it returns
        with self._mapped():
            self._conn.execute("BEGIN")
        self._in_transaction = True
        try:
            yield
            with (
                self._mapped()
            ):  # still in the transaction: a connection lost by now raises, never reconnects
                self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        finally:
            self._in_transaction = False

    def _rollback(self) -> None:
        """ROLLBACK quietly: a connection that broke has lost the transaction anyway."""
        if self._connection is None or self._connection.closed:
            return
        try:
            self._connection.execute("ROLLBACK")
        except psycopg.Error:
            self._forget()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Taken lazily: only a block that runs a statement pays for SAVEPOINT and RELEASE."""
        self._savepoint = "pending"
        try:
            yield
        except BaseException:
            opened, self._savepoint = self._savepoint == "open", "none"
            if opened and self._connection is not None:
                with self._mapped():
                    self._connection.execute("ROLLBACK TO SAVEPOINT message")
                    self._connection.execute("RELEASE SAVEPOINT message")
            raise
        opened, self._savepoint = self._savepoint == "open", "none"
        if opened:
            with self._mapped():
                self._conn.execute("RELEASE SAVEPOINT message")

    def first_time(self, event_id: str) -> bool:
        cursor = self.execute(
            "INSERT INTO processed (consumer, event_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (self.consumer, event_id),
        )
        return cursor.rowcount == 1

    def first_times(self, event_ids: Sequence[str]) -> set[str]:
        """The ids of event_ids not processed before, now recorded (one statement)."""
        cursor = self.execute(
            "INSERT INTO processed (consumer, event_id) SELECT DISTINCT ?, unnest(?::text[]) "
            "ON CONFLICT DO NOTHING RETURNING event_id",
            (self.consumer, list(event_ids)),
        )
        return {row["event_id"] for row in cursor}

    def lock(self, keys: Iterable[str]) -> None:
        ordered = sorted({lock_key(key) for key in keys})
        if ordered:
            self.execute("SELECT tcx_lock_keys(?::bigint[])", (ordered,))
