"""The tcx-bridge commands that read and write stored data: contacts, the call report, the CRM journal.

Registered on the group in cli.py. Every value read back from a store is printed
through bridge.text.printable (tables, CSV) or JSON-escaped, never raw.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, get_args

import click

from bridge.clikit import with_settings
from bridge.config import Settings, redact_url
from bridge.events import Direction
from consumers.crm.settings import CRM


@click.group()
def contacts() -> None:
    """The contacts the CRM consumer looks callers up in (contacts.sqlite3, or the PostgreSQL store)."""


@contacts.command("import")
@click.argument("contacts_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Delete every contact first.")
@click.option("--key", help="Column with an external id (e.g. kundennummer); default: the first number.")
@click.option("--map", "mapping", help="Columns the aliases do not know, e.g. phone=Geschäft,mobile=Natel.")
@click.option("--encoding", help="Override the detected encoding (utf-8, utf-16, cp1252, ...).")
@click.option("--delimiter", help="Override the detected delimiter (',', ';', tab, '|').")
@with_settings
def contacts_import(
    settings: Settings,
    contacts_file: Path,
    replace: bool,
    key: str | None,
    mapping: str | None,
    encoding: str | None,
    delimiter: str | None,
) -> None:
    """Import contacts from a CSV or .xlsx file, as CRMs and Excel export them.

    Delimiter and encoding are detected; headers in English, German or French are
    recognised (Name, Telefon, Tel., Téléphone, Mobil, Natel, Firma, Société,
    E-Mail, Website, Vorname + Nachname, ...), Outlook's and Google's exports too.
    Importing again updates the contacts with the same key; rows of one file with
    the same key are merged into one contact; a row with only a company is named by
    it. Limits: 1,000,000 rows, 256 MiB of CSV, 64 MiB of unpacked .xlsx.

    \b
    Example:
        tcx-bridge contacts import export.csv --key kundennummer
        tcx-bridge contacts import adressen.xlsx --map phone=Geschäft,mobile=Natel
    """
    from consumers.crm.contacts import open_contacts

    store = open_contacts(settings)
    result = store.import_file(
        contacts_file,
        settings.region,
        replace=replace,
        key=key,
        encoding=encoding,
        delimiter=delimiter,
        mapping=mapping,
    )
    for problem in result.problems[:20]:
        click.echo(f"{contacts_file}: {problem}", err=True)
    if len(result.problems) + result.unlisted > 20:
        more = len(result.problems) + result.unlisted - 20
        click.echo(f"{contacts_file}: ... and {more} more problems", err=True)
    click.echo(
        f"imported {result.imported}, updated {result.updated}, merged {result.merged}, "
        f"skipped {result.skipped}; "
        f"{store.count()} contact(s) in {store.store.name}"
    )
    store.close()


@contacts.command("lookup")
@click.argument("number")
@with_settings
def contacts_lookup(settings: Settings, number: str) -> None:
    """Show the contact a screen pop for NUMBER would show, and how the number was read.

    \b
    Example:
        tcx-bridge contacts lookup "044 111 22 33"
    """
    from bridge.text import printable
    from consumers.crm.consumer import contact_lookup
    from consumers.numbers import normalise

    read = normalise(number, settings.region)
    click.echo(f"number   {printable(number)!r} -> {read.kind}" + (f" {read.e164}" if read.e164 else ""))
    if read.kind != "external" or read.e164 is None:
        raise click.ClickException(f"{number!r} is {read.kind}: a pop looks up external numbers only")
    contact = contact_lookup(settings).lookup(read.e164, number)
    if contact is None:
        raise click.ClickException(f"no contact for {read.e164}: the pop shows an unknown caller")
    for field in ("name", "company", "email", "url"):
        click.echo(f"{field:<8} {printable(getattr(contact, field) or '-')}")


@contacts.command("list")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
@with_settings
def contacts_list(settings: Settings, fmt: str) -> None:
    """List the stored contacts, one line per number.

    \b
    Example:
        tcx-bridge contacts list --format csv > contacts-backup.csv
    """
    from consumers.analytics.report import render_table
    from consumers.crm.contacts import open_contacts

    store = open_contacts(settings)
    rows = store.rows()
    store.close()
    columns = ["key", "name", "phone", "e164", "company", "email", "url"]
    emit_rows(rows, columns, fmt, render_table)


def emit_rows(rows: list[dict[str, Any]], columns: list[str], fmt: str, table: Any) -> None:
    """Rows as a table, JSON or CSV on stdout; control characters always made visible."""
    import csv
    import json

    from consumers.analytics.report import safe_row

    if fmt == "json":
        click.echo(json.dumps([{c: row.get(c) for c in columns} for row in rows], indent=2))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(safe_row(row) for row in rows)
    else:
        click.echo(table(rows, columns))


@click.command("report")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
@click.option("--calls", is_flag=True, help="Print the per-call records instead of the summaries.")
@click.option("--direction", type=click.Choice(get_args(Direction)), help="Only these calls.")
@click.option("--since", help="Calls started on or after this day or time (2026-11-02, or RFC 3339).")
@click.option("--until", help="Calls started before this day or time (a day: up to its end).")
@click.option("--desk", "desks", multiple=True, help="Only this desk (repeatable).")
@with_settings
def report_command(
    settings: Settings,
    fmt: str,
    calls: bool,
    direction: str | None,
    since: str | None,
    until: str | None,
    desks: tuple[str, ...],
) -> None:
    """Call analytics: per-day and per-desk summaries (the calls_daily view), or the per-call records.

    The answer rate, ring and talk times are of inbound calls; outbound calls are
    counted apart (dialed, connected, average talk).

    \b
    Example:
        tcx-bridge report --since 2026-11-01 --until 2026-11-30
        tcx-bridge report --calls --desk DESK-07 --format json
    """
    import json

    from consumers.analytics.report import (
        CALL_COLUMNS,
        COLUMNS,
        Selection,
        daily_report,
        load_calls,
        render_table,
        time_range,
    )
    from consumers.store.core import open_store

    start, end = time_range(since, until)
    selection = Selection(direction, start, end, desks)
    store = open_store(settings, "analytics", existing=True)
    try:
        if calls:
            records = load_calls(store, selection)
            emit_rows(records, list(CALL_COLUMNS), fmt, render_table)
            return
        summary = daily_report(store, selection)
    finally:
        if store is not None:
            store.close()
    columns = list(COLUMNS) + _with_callbacks(settings, summary, selection)
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))
    elif fmt == "csv":
        rows = [
            {"group": key, "key": row[key], **{c: row.get(c) for c in columns}}
            for group, key in (("by_day", "day"), ("by_desk", "desk"))
            for row in summary[group]
        ]
        emit_rows(rows, ["group", "key", *columns], "csv", render_table)
    else:
        click.echo("Calls by day (UTC)")
        click.echo(render_table(summary["by_day"], ["day", *columns]))
        click.echo("")
        click.echo("Calls by desk")
        click.echo(render_table(summary["by_desk"], ["desk", *columns]))


def _with_callbacks(
    settings: Settings, summary: dict[str, list[dict[str, Any]]], selection: Any
) -> list[str]:
    """The callbacks consumer's columns added to the summary (consumers.callbacks.report), when it has
    tasks; their names."""
    from consumers.callbacks.report import CALLBACK_COLUMNS, add_callbacks, callback_summary
    from consumers.store.core import open_store

    store = open_store(settings, "callbacks", existing=True)
    if store is None:
        return []
    try:
        if store.execute("SELECT count(*) AS n FROM callbacks").fetchone()["n"] == 0:
            return []  # the callbacks consumer is not in use here: no columns of zeros
        add_callbacks(summary, callback_summary(store, selection))
    finally:
        store.close()
    return list(CALLBACK_COLUMNS)


@click.command("journal")
@click.option("--since", help="Entries of calls that ended on or after this day or time.")
@click.option("--until", help="... and before this day or time (a day: up to its end).")
@click.option("--desk", "desks", multiple=True, help="Only this desk (repeatable).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
@with_settings
def journal_command(
    settings: Settings, since: str | None, until: str | None, desks: tuple[str, ...], fmt: str
) -> None:
    """The CRM consumer's call journal: one entry per ended call, with the contact it found.

    \b
    Example:
        tcx-bridge journal --since 2026-11-02 --desk DESK-07 --format csv
    """
    options = CRM.of(settings)
    from consumers.analytics.report import render_table, time_range
    from consumers.crm.consumer import JOURNAL_COLUMNS, load_journal

    if options.crm_journal_url:
        click.echo(
            f"note: the journal goes to {redact_url(options.crm_journal_url)}; "
            "this shows what is stored here",
            err=True,
        )
    start, end = time_range(since, until)
    emit_rows(
        load_journal(settings, since=start, until=end, desks=desks), list(JOURNAL_COLUMNS), fmt, render_table
    )


COMMANDS = (contacts, report_command, journal_command)
