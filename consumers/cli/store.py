"""``tcx-bridge store``: the consumers' schema (migrate) and moving a SQLite history to PostgreSQL (copy).

Registered on the group in cli.py.
"""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from bridge.clikit import with_settings
from bridge.config import Settings, redact_url
from bridge.errors import ConfigError


@click.group("store")
def store() -> None:
    """The consumers' store: SQLite files in the data dir, or PostgreSQL (store_url)."""


@store.command("migrate")
@with_settings
def store_migrate(settings: Settings) -> None:
    """Bring the store's schema up to date (idempotent; consumers also do it at start).

    With store_url, the PostgreSQL database; else every store file in the data dir.

    \b
    Example:
        tcx-bridge --store-url postgresql://tcx@db/tcx store migrate
    """
    from consumers.store.core import SQLITE_STORES, open_store, sqlite_path
    from consumers.store.schema import LATEST, migrate

    if settings.store_url:
        targets = [""]
    else:
        targets = [name for name in SQLITE_STORES if sqlite_path(settings, name).exists()]
        if not targets:
            click.echo(f"no store in {settings.data_dir} yet: the consumers create theirs at start")
            return
    for consumer in targets:
        opened = open_store(settings, consumer)
        try:
            applied = migrate(opened)
        finally:
            opened.close()
        done = f"applied {', '.join(map(str, applied))}" if applied else "up to date"
        click.echo(f"{opened.name}: schema version {LATEST} ({done})")


@store.command("rebuild")
@click.argument("name", metavar="analytics|crm|NAME")
@click.option("--since", metavar="DAY", help="From this day (YYYY-MM-DD, UTC); earlier records are kept.")
@with_settings
def store_rebuild(settings: Settings, name: str, since: str | None) -> None:
    """Rebuild a consumer's call records from the history stream into a fresh table and swap it in.

    The live consumer keeps running; the swap is one transaction. Without --since,
    from the history's first day (records older than the history are kept as they are).

    \b
    Example:
        tcx-bridge store rebuild analytics
        tcx-bridge store rebuild crm --since 2026-11-02
    """
    from datetime import date

    from bridge.transport import Broker
    from consumers.analytics.calls import CallConsumer
    from consumers.analytics.rebuild import Rebuild
    from consumers.runtime.plugins import load

    day = None
    if since is not None:
        try:
            day = date.fromisoformat(since.strip())
        except ValueError:
            raise click.BadParameter(
                f"{since!r} is not a day; give YYYY-MM-DD", param_hint="--since"
            ) from None
    kind = load(name)
    if not issubclass(kind, CallConsumer):
        raise ConfigError(f"consumer {name!r} keeps no call records; store rebuild knows those alone")
    consumer = kind(settings)
    try:
        with Broker(settings.amqp_url, ca_file=settings.ca_file) as broker:
            merged = Rebuild(settings, consumer, day).run(broker, click.echo)
    finally:
        consumer.close()
    click.echo(f"{name}: rebuilt from {merged} event(s) of the history and swapped in")


@store.command("copy")
@click.option(
    "--from",
    "source",
    metavar="sqlite:PATH",
    help="A data dir, or one of its .sqlite3 files (default: sqlite:<data dir>).",
)
@click.option("--to", "target", metavar="postgresql://…", help="The PostgreSQL store (default: store_url).")
@with_settings
def store_copy(settings: Settings, source: str | None, target: str | None) -> None:
    """Copy an existing SQLite history (calls, journal, contacts, processed ids) into PostgreSQL.

    The PostgreSQL tables must be empty; everything is copied in one transaction.

    \b
    Example:
        tcx-bridge store copy --from sqlite:/var/lib/tcx-bridge --to postgresql://tcx@db/tcx
    """
    from consumers.store.copy import copy
    from consumers.store.core import open_store

    text = source or f"sqlite:{settings.data_dir}"
    if not text.startswith("sqlite:"):
        raise click.BadParameter(f"{text!r} is not sqlite:PATH", param_hint="--from")
    url = target or settings.store_url
    if not url:
        raise ConfigError("store copy needs --to postgresql://… (or store_url)")
    destination = msgspec.structs.replace(settings, store_url=_check_url(url))
    opened = open_store(destination, "")
    try:
        copied = copy(Path(text.removeprefix("sqlite:")), opened)
    finally:
        opened.close()
    for table, rows in copied:
        click.echo(f"{table}: {rows} row(s)")
    click.echo(f"copied {text} to {redact_url(url)}")


def _check_url(url: str) -> str:
    from bridge.config import KEYS_BY_NAME

    checked = KEYS_BY_NAME["store_url"].parse("--to", url)
    assert isinstance(checked, str)
    return checked


COMMANDS = (store,)
