"""The PostgreSQL store's connect errors: refused for good (exit 1, one line) or for now (reconnect)."""

from __future__ import annotations

import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import run_cli

psycopg = pytest.importorskip("psycopg")
from consumers.store.postgres import refused_for_good  # noqa: E402  # needs psycopg

# what libpq says when a connect fails (its connect errors carry no SQLSTATE), and what we make of it
CONNECT_FAILURES = [
    (
        'FATAL:  database "tcx" does not exist',
        "the database 'tcx' does not exist; create it or fix store_url",
    ),
    ('FATAL:  role "app" does not exist', "the role 'app' does not exist; create it or fix store_url's user"),
    ('FATAL:  password authentication failed for user "app"', "the password of 'app' was refused; fix it"),
    (
        'FATAL:  Peer authentication failed for user "app"',
        "Peer authentication of 'app' failed; fix store_url",
    ),
    ("fe_sendauth: no password supplied", "the server asks for a password and store_url gives none; add it"),
    ('FATAL:  role "app" is not permitted to log in', "the role 'app' may not log in; ALTER ROLE … LOGIN"),
    ('FATAL:  permission denied for database "tcx"', "no CONNECT right on the database 'tcx'; GRANT CONNECT"),
    (
        'FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "app", database "tcx", no encryption',
        "pg_hba.conf has no entry for host '10.0.0.9'; add one",
    ),
]
# the server away or busy: transient, the consumer waits and reconnects
FOR_NOW = [
    "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
    "FATAL:  the database system is starting up",
    "FATAL:  the database system is shutting down",
    "FATAL:  sorry, too many clients already",
    "timeout expired",
]


def _connect_error(server_says: str) -> psycopg.Error:
    return psycopg.OperationalError(
        f'connection failed: connection to server at "db", port 5432 failed: {server_says}'
    )


@pytest.mark.parametrize(("server_says", "expected"), CONNECT_FAILURES)
def test_a_connect_refused_for_good_says_why_and_the_fix(server_says: str, expected: str) -> None:
    assert refused_for_good(_connect_error(server_says)) == expected


@pytest.mark.parametrize("server_says", FOR_NOW)
def test_a_server_away_or_busy_is_not_refused_for_good(server_says: str) -> None:
    assert refused_for_good(_connect_error(server_says)) is None


def _with(url: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if user is not None:
        netloc = f"{user}@{netloc}"
    elif "@" in parts.netloc:
        netloc = parts.netloc
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}" if database else parts.path))


@pytest.mark.integration
@pytest.mark.parametrize("missing", ["database", "role"])
def test_consume_with_a_store_url_naming_nothing_exits_1_within_seconds(
    missing: str, pg_database: str, env: dict[str, str]
) -> None:
    """The local PostgreSQL answers but has no such database (or role): one line, exit 1, no reconnect loop."""
    name = f"tcx_missing_{uuid.uuid4().hex[:8]}"
    url = _with(pg_database, database=name) if missing == "database" else _with(pg_database, user=name)
    started = time.monotonic()
    done = run_cli(env, "consume", "analytics", "--store-url", url, timeout=30)
    assert time.monotonic() - started < 15
    assert done.returncode == 1, done.stderr
    why = (
        f"the database {name!r} does not exist; create it or fix store_url"
        if missing == "database"
        else f"the role {name!r} does not exist; create it or fix store_url's user"
    )
    assert done.stderr.splitlines()[-1] == f"Error: store_url {url}: {why}"  # no password in it
    assert "reconnecting" not in done.stderr


@pytest.mark.integration
def test_doctor_says_fix_store_url_for_a_missing_database(pg_database: str, env: dict[str, str]) -> None:
    url = _with(pg_database, database=f"tcx_missing_{uuid.uuid4().hex[:8]}")
    done = run_cli({**env, "TCX_BRIDGE_STORE_URL": url}, "doctor")
    line = next(line for line in done.stdout.splitlines() if " store " in line)
    assert line.startswith(f"\u2717 store {url}: store_url {url}: the database ")
    assert line.endswith(" -> fix store_url (database, user, password)")
