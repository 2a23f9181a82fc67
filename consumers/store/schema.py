"""The consumers' schema, one versioned list of migrations for SQLite and PostgreSQL.

Both backends hold the same tables (docs/store.md is their public description):

    processed        event ids already handled (per consumer), written with their side effects
    calls            analytics: one record per call (the table BI tools read)
    crm_calls        the CRM consumer's records (PostgreSQL; in SQLite: ``calls`` of crm.sqlite3)
    wallboard_calls  the wallboard's records (PostgreSQL; in SQLite: ``calls`` of wallboard.sqlite3)
    journal          the CRM call journal
    contacts         the contacts screen pops are looked up in
    service_level    one row: the seconds within which an answer counts for the service level
    stream_offsets   per consumer and backfill origin: the next history offset to read, and whether it is done
                     (version 4)
    calls_daily      a view: per day (UTC) and desk, inbound answered/missed, rates, averages, outbound
    calls_daily_archive  calls_daily rows of days whose calls retention deleted (no numbers; version 2)
    callbacks        the callbacks consumer's tasks: one per missed external caller until reached (v3)
    callback_outbox  callback events waiting for the callbacks consumer to publish them (v3)

SQLite keeps one file per consumer (each file gets the whole schema, its version
in ``PRAGMA user_version``); PostgreSQL keeps one database (version in
``tcx_schema``). :func:`migrate` applies what is missing, in one transaction,
and is idempotent; a database newer than this code is a StoreError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bridge.errors import StoreError

if TYPE_CHECKING:
    from consumers.store.core import Store

VERSION_TABLE = "tcx_schema"
MIGRATE_LOCK = 7_236_120  # a PostgreSQL advisory lock: replicas starting together migrate one at a time

CALLS_COLUMNS = """
    desk TEXT NOT NULL,
    direction TEXT NOT NULL,
    call_id TEXT NOT NULL,
    caller_id TEXT,
    extension TEXT,
    started_at {time},
    connected_at {time},
    ended_at {time},
    ring_seconds {real},
    talk_seconds {real},
    answered {boolean} NOT NULL DEFAULT {false}
"""

DAILY_SELECT = """
SELECT {day} AS day,
       desk,
       count(*) AS calls,
       count(*) FILTER (WHERE direction <> 'outbound') AS inbound_calls,
       {answered} AS inbound_answered,
       {missed} AS inbound_missed,
       {answer_rate} AS answer_rate,
       {within} AS inbound_within_service_level,
       {service_level} AS service_level,
       {rings} AS ring_count,
       {ring_sum} AS ring_microseconds_sum,
       {ring_avg} AS ring_avg,
       count(talk_seconds) FILTER (WHERE {inbound_answered}) AS talk_count,
       {talk_sum} AS talk_microseconds_sum,
       {talk_avg} AS talk_avg,
       count(*) FILTER (WHERE direction = 'outbound') AS outbound_dialed,
       count(*) FILTER (WHERE direction = 'outbound' AND answered) AS outbound_connected,
       count(talk_seconds) FILTER (WHERE direction = 'outbound' AND answered) AS outbound_talk_count,
       {outbound_talk_sum} AS outbound_talk_microseconds_sum
FROM {table}
{where}
GROUP BY 1, 2
"""

INBOUND_ANSWERED = "direction <> 'outbound' AND answered"
DIALECT_TERMS = {
    "sqlite": {
        "time": "TEXT",
        "real": "REAL",
        "boolean": "INTEGER",
        "false": "0",
        "day": "substr(coalesce(started_at, connected_at, ended_at), 1, 10)",
        "ratio": "round(1.0 * ({a}) / nullif({b}, 0), {digits})",
        "average": "round(avg({x}) FILTER (WHERE {where}), 3)",
        "micro": "CAST(round({x} * 1000000) AS INTEGER)",
        "whole": "{x}",
    },
    "postgresql": {
        "time": "timestamptz",
        "real": "double precision",
        "boolean": "boolean",
        "false": "false",
        "day": "(coalesce(started_at, connected_at, ended_at) AT TIME ZONE 'UTC')::date",
        "ratio": "round(({a})::numeric / nullif({b}, 0), {digits})::double precision",
        "average": "round((avg({x}) FILTER (WHERE {where}))::numeric, 3)::double precision",
        "micro": "round({x} * 1000000)::bigint",
        "whole": "({x})::bigint",  # sum(bigint) is numeric
    },
}


def daily_select(dialect: str, table: str = "calls", where: str = "") -> str:
    """The calls_daily query over table (the view is this with no where)."""
    terms = DIALECT_TERMS[dialect]

    def ratio(a: str, b: str, digits: int = 4) -> str:
        return terms["ratio"].format(a=a, b=b, digits=digits)

    answered = f"count(*) FILTER (WHERE {INBOUND_ANSWERED})"
    missed = "count(*) FILTER (WHERE direction <> 'outbound' AND NOT answered AND ended_at IS NOT NULL)"
    within = (
        f"count(*) FILTER (WHERE {INBOUND_ANSWERED} AND ring_seconds <= (SELECT seconds FROM service_level))"
    )
    rings = f"count(ring_seconds) FILTER (WHERE {INBOUND_ANSWERED})"

    def exact_sum(column: str, where: str) -> str:
        """Sums in whole microseconds: the same on both backends, whatever the order of the rows."""
        total = f"coalesce(sum({terms['micro'].format(x=column)}) FILTER (WHERE {where}), 0)"
        return terms["whole"].format(x=total)

    return DAILY_SELECT.format(
        ring_sum=exact_sum("ring_seconds", INBOUND_ANSWERED),
        talk_sum=exact_sum("talk_seconds", INBOUND_ANSWERED),
        outbound_talk_sum=exact_sum("talk_seconds", "direction = 'outbound' AND answered"),
        day=terms["day"],
        table=table,
        where=where,
        inbound_answered=INBOUND_ANSWERED,
        answered=answered,
        missed=missed,
        within=within,
        rings=rings,
        answer_rate=ratio(answered, f"{answered} + {missed}"),
        service_level=ratio(within, rings),
        ring_avg=terms["average"].format(x="ring_seconds", where=INBOUND_ANSWERED),
        talk_avg=terms["average"].format(x="talk_seconds", where=INBOUND_ANSWERED),
    )


# every SQLite store's processed event ids (a plugin's file too: core.open_database creates it)
PROCESSED_SQLITE = """
CREATE TABLE IF NOT EXISTS processed (
    event_id TEXT PRIMARY KEY,
    processed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) WITHOUT ROWID;
"""


# every SQLite store's backfill offsets (a plugin's file too: core.open_database creates it)
STREAM_OFFSETS_SQLITE = """
CREATE TABLE IF NOT EXISTS stream_offsets (
    consumer TEXT NOT NULL,
    origin TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer, origin)
) WITHOUT ROWID;
"""


def _calls_table(dialect: str, name: str, *, if_missing: bool) -> str:
    terms = DIALECT_TERMS[dialect]
    guard = "IF NOT EXISTS " if if_missing else ""
    key = (
        "id INTEGER PRIMARY KEY"
        if dialect == "sqlite"
        else "id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    )
    order = "" if dialect == "sqlite" else ", id DESC"
    return (
        f"CREATE TABLE {guard}{name} ({key}, {CALLS_COLUMNS.format(**terms)});\n"
        f"CREATE INDEX {guard}{name}_key ON {name} (desk, direction, call_id{order});\n"
        f"CREATE INDEX {guard}{name}_started ON {name} (started_at);\n"
    )


def calls_table_ddl(dialect: str, name: str) -> str:
    """A table of call records with its indexes, created only if missing (a plugin's)."""
    return _calls_table(dialect, name, if_missing=True)


def _sqlite_v1(store: Store) -> None:
    """Version 1 in SQLite: what earlier releases created without a version, plus the view."""
    store.script(
        PROCESSED_SQLITE
        + """
        CREATE TABLE IF NOT EXISTS journal (
            call_key INTEGER PRIMARY KEY, desk TEXT NOT NULL, direction TEXT NOT NULL, call_id TEXT NOT NULL,
            number TEXT, number_e164 TEXT, contact_name TEXT, contact TEXT, answered INTEGER NOT NULL,
            ring_seconds REAL, talk_seconds REAL, started_at TEXT, connected_at TEXT, ended_at TEXT
        );
        CREATE TABLE IF NOT EXISTS contacts (
            id INTEGER PRIMARY KEY, e164 TEXT NOT NULL, phone TEXT NOT NULL, name TEXT NOT NULL,
            company TEXT, email TEXT, url TEXT, extra TEXT
        );
        CREATE INDEX IF NOT EXISTS contacts_e164 ON contacts (e164);
        CREATE TABLE IF NOT EXISTS service_level (
            id INTEGER PRIMARY KEY CHECK (id = 1), seconds REAL NOT NULL
        );
        INSERT OR IGNORE INTO service_level (id, seconds) VALUES (1, 20);
        """
        + _calls_table("sqlite", "calls", if_missing=True)
    )
    known = {row["name"] for row in store.execute("PRAGMA table_info(contacts)")}
    if "key" not in known:  # a store from before keys: each row its own contact, keyed by number
        store.execute("ALTER TABLE contacts ADD COLUMN key TEXT")
        store.execute("UPDATE contacts SET key = e164")
    store.script(
        "CREATE INDEX IF NOT EXISTS contacts_key ON contacts (key);\n"
        f"DROP VIEW IF EXISTS calls_daily;\nCREATE VIEW calls_daily AS {daily_select('sqlite')};"
    )


def _postgresql_v1(store: Store) -> None:
    store.script(
        """
        CREATE TABLE processed (
            consumer text NOT NULL,
            event_id text NOT NULL,
            processed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, event_id)
        );
        CREATE TABLE journal (
            call_key bigint PRIMARY KEY, desk text NOT NULL, direction text NOT NULL, call_id text NOT NULL,
            number text, number_e164 text, contact_name text, contact jsonb, answered boolean NOT NULL,
            ring_seconds double precision, talk_seconds double precision,
            started_at timestamptz, connected_at timestamptz, ended_at timestamptz
        );
        CREATE INDEX journal_ended ON journal (ended_at);
        CREATE TABLE contacts (
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, key text, e164 text NOT NULL,
            phone text NOT NULL, name text NOT NULL, company text, email text, url text, extra jsonb
        );
        CREATE INDEX contacts_e164 ON contacts (e164, id DESC);
        CREATE INDEX contacts_key ON contacts (key);
        CREATE TABLE service_level (
            id boolean PRIMARY KEY DEFAULT true CHECK (id), seconds double precision NOT NULL
        );
        INSERT INTO service_level (id, seconds) VALUES (true, 20);
        CREATE FUNCTION tcx_lock_keys(keys bigint[]) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE k bigint;
        BEGIN
            -- in the order given (sorted by the caller): replicas never wait on each other in a circle
            FOREACH k IN ARRAY keys LOOP
                PERFORM pg_advisory_xact_lock(k);
            END LOOP;
        END $$;
        """
        + "".join(
            _calls_table("postgresql", name, if_missing=False)
            for name in ("calls", "crm_calls", "wallboard_calls")
        )
        + f"CREATE VIEW calls_daily AS {daily_select('postgresql')};"
    )


ARCHIVE = "calls_daily_archive"


def _archive_v2(store: Store) -> None:
    """Version 2: calls_daily keeps the days whose per-call rows retention deleted (privacy sweep)."""
    empty = " WITH NO DATA" if store.dialect == "postgresql" else ""
    select = "SELECT * FROM calls_daily WHERE 1 = 0" if not empty else "SELECT * FROM calls_daily"
    store.script(
        f"CREATE TABLE {ARCHIVE} AS {select}{empty};\n"
        f"CREATE INDEX {ARCHIVE}_day ON {ARCHIVE} (day);\n"
        "DROP VIEW calls_daily;\n"
        f"CREATE VIEW calls_daily AS {daily_select(store.dialect)} UNION ALL SELECT * FROM {ARCHIVE};"
    )


CALLBACKS = """
CREATE TABLE callbacks (
    id {key},
    number TEXT NOT NULL,
    number_e164 TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    outcome TEXT,
    missed_count INTEGER NOT NULL DEFAULT 1,
    missed_desk TEXT NOT NULL,
    first_missed_at {time} NOT NULL,
    last_missed_at {time} NOT NULL,
    due_at {time} NOT NULL,
    desk TEXT,
    assigned_at {time},
    attempts INTEGER NOT NULL DEFAULT 0,
    dial_request TEXT,
    dial_state TEXT,
    dial_desk TEXT,
    dial_call_id TEXT,
    reached_at {time},
    reached_by TEXT,
    closed_at {time},
    reason TEXT
);
CREATE UNIQUE INDEX callbacks_open ON callbacks (number_e164) WHERE status = 'open';
CREATE INDEX callbacks_missed ON callbacks (first_missed_at);
CREATE TABLE callback_outbox (id {key}, routing_key TEXT NOT NULL, body {blob} NOT NULL);
"""


def _callbacks_v3(store: Store) -> None:
    """Version 3: the callbacks consumer's tasks and its outbox of events (consumers.callbacks)."""
    if store.dialect == "sqlite":
        terms = {"key": "INTEGER PRIMARY KEY", "time": "TEXT", "blob": "BLOB"}
    else:
        terms = {"key": "bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "time": "timestamptz"}
        terms["blob"] = "bytea"
    store.script(CALLBACKS.format(**terms))


def _sqlite_v4(store: Store) -> None:
    """Version 4: the backfill offsets (consume --from; docs/history.md)."""
    store.script(STREAM_OFFSETS_SQLITE)


def _postgresql_v4(store: Store) -> None:
    store.script(
        """
        CREATE TABLE stream_offsets (
            consumer text NOT NULL,
            origin text NOT NULL,
            next_offset bigint NOT NULL,
            done boolean NOT NULL DEFAULT false,
            PRIMARY KEY (consumer, origin)
        );
        """
    )


MIGRATIONS: dict[str, list[Callable[[Store], None]]] = {
    "sqlite": [_sqlite_v1, _archive_v2, _callbacks_v3, _sqlite_v4],
    "postgresql": [_postgresql_v1, _archive_v2, _callbacks_v3, _postgresql_v4],
}
LATEST = 4
assert all(len(steps) == LATEST for steps in MIGRATIONS.values())


def current_version(store: Store) -> int:
    if store.dialect == "sqlite":
        return int(store.execute("PRAGMA user_version").fetchone()[0])
    found = store.execute("SELECT to_regclass(?) AS name", (VERSION_TABLE,)).fetchone()
    if found["name"] is None:
        return 0
    return int(store.execute(f"SELECT coalesce(max(version), 0) AS v FROM {VERSION_TABLE}").fetchone()["v"])


def migrate(store: Store) -> list[int]:
    """Apply the missing migrations in one transaction; the versions applied (none: up to date)."""
    applied: list[int] = []
    with store.transaction():
        if store.dialect == "postgresql":
            store.execute(f"SELECT pg_advisory_xact_lock({MIGRATE_LOCK})")
            store.execute(
                f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        version = current_version(store)
        if version > LATEST:
            raise StoreError(
                f"store {store.name!r} has schema version {version}, newer than this tcx-bridge knows "
                f"({LATEST}); upgrade tcx-bridge on this host"
            )
        for number, step in enumerate(MIGRATIONS[store.dialect][version:], start=version + 1):
            step(store)
            if store.dialect == "sqlite":
                store.execute(f"PRAGMA user_version = {number}")
            else:
                store.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (?)", (number,))
            applied.append(number)
    return applied
