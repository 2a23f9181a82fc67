"""PostgreSQL for the tests: a database per test run, a schema per test, and a server of their own to restart.

Server: TCX_BRIDGE_TEST_PG_URL (a URL to a database the tests may create
databases from), else the local one at 127.0.0.1:5432 (trust auth). Each test
gets a schema of its own in the run's database through the URL's search_path,
so tests never see each other's rows. :class:`LocalPostgres` starts a server of
the tests' own (initdb + pg_ctl as the postgres user, on a port from 25432), for
tests that restart it: the machine's shared server is never restarted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BIN = Path("/usr/lib/postgresql")


def server_url() -> str:
    return os.environ.get("TCX_BRIDGE_TEST_PG_URL") or LOCAL_PG


def answers(url: str) -> str | None:
    """None when a PostgreSQL server answers at url; else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'tcx-bridge[postgres]')"
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as error:
        return f"no PostgreSQL answers at {url} ({str(error).strip().splitlines()[0]}); set TCX_BRIDGE_TEST_PG_URL"
    return None


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def with_schema(url: str, schema: str) -> str:
    """url whose connections use schema (created if missing) first."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


@contextlib.contextmanager
def test_database(url: str) -> Iterator[str]:
    """A database created for this test run from the server at url, dropped afterwards."""
    import psycopg

    name = f"tcx_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _free_port(start: int) -> int:
    for port in range(start, start + 200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port for a test PostgreSQL")


def local_postgres_available() -> str | None:
    """None when this machine can start a PostgreSQL of the tests' own; else why not."""
    if not list(PG_BIN.glob("*/bin/initdb")):
        return "no PostgreSQL server binaries (initdb) here"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as its own user"
    return None


class LocalPostgres:
    """A PostgreSQL server of the tests' own, in a temporary directory, on a port of its own."""

    def __init__(self) -> None:
        self.bin = sorted(PG_BIN.glob("*/bin/initdb"))[-1].parent
        self.directory = Path(tempfile.mkdtemp(prefix="tcx-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port(25432)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        self.resume()

    def resume(self) -> None:
        """Start the (stopped) server again."""
        self._ctl("start")

    def _ctl(self, action: str) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.directory / "log"), "-w", "-o", options, action
        )

    def restart(self) -> None:
        """As an operator's restart: connections closed (fast shutdown), then up again."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.resume()

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
