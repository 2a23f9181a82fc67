"""``tcx-bridge privacy``: subject access (report), erasure (forget), retention (sweep) and the audit trail.

Every action is recorded in ``<data_dir>/privacy-audit.jsonl`` with the number
only as a keyed hash (consumers.privacy.audit); docs/privacy.md is the guide.
"""

from __future__ import annotations

import json
from typing import Any

import click

from bridge.clikit import with_settings
from bridge.config import Settings
from bridge.text import printable


@click.group("privacy")
def privacy() -> None:
    """Callers' numbers: what is stored about one (report), erase it (forget), retention (sweep), audit."""


def _forms(settings: Settings, number: str) -> Any:
    from consumers.privacy.forms import forms_of, key_of

    return forms_of(number, settings.region, key_of(settings.data_dir))


def _broker_user(settings: Settings) -> str:
    from urllib.parse import unquote, urlsplit

    user = urlsplit(settings.amqp_url.split(",")[0].strip()).username
    return unquote(user) if user else "guest"


@privacy.command("report")
@click.argument("number")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--no-broker", is_flag=True, help="Do not look into the dead-letter queues.")
@with_settings
def report_command(settings: Settings, number: str, fmt: str, no_broker: bool) -> None:
    """Print everything stored about NUMBER on this machine, store by store (GDPR Art. 15).

    \b
    Example:
        tcx-bridge privacy report "+41 79 123 45 67" --format json
    """
    from bridge.transport import Broker
    from consumers.privacy import actions, audit

    forms = _forms(settings, number)
    if no_broker:
        places = actions.report(settings, forms)
    else:
        with Broker(settings.amqp_url, ca_file=settings.ca_file) as broker:
            places = actions.report(settings, forms, broker)
    counts = {place["place"]: len(_items(place)) for place in places}
    audit.record(
        settings.data_dir,
        "report",
        broker_user=_broker_user(settings),
        number_hash=sorted(forms.hashes)[0],
        places=counts,
    )
    if fmt == "json":
        click.echo(json.dumps({"number": forms.e164 or forms.given, "places": places}, indent=2, default=str))
        return
    if not places:
        click.echo(f"nothing stored about {printable(number)} on this machine")
    for place in places:
        items = _items(place)
        click.echo(f"{place['place']}: {len(items)}")
        for item in items:
            click.echo(
                f"  {printable(json.dumps(item, default=str) if isinstance(item, dict) else item, 500)}"
            )


def _items(place: dict[str, Any]) -> list[Any]:
    found: list[Any] = place.get("rows") or place.get("lines") or place.get("messages") or []
    return found


@privacy.command("forget")
@click.argument("number")
@click.option("--dry-run", is_flag=True, help="Say what would be erased; change nothing, publish nothing.")
@with_settings
def forget_command(settings: Settings, number: str, dry_run: bool) -> None:
    """Erase NUMBER in every form from every store and file this machine reaches (GDPR Art. 17),
    and ask every desk agent and consumer to erase it in what only they hold (privacy.forget).

    Rows are kept for the totals with the number replaced by [erased]; SQLite files are vacuumed.

    \b
    Example:
        tcx-bridge privacy forget "079 123 45 67" --dry-run
    """
    from consumers.privacy import actions, audit, command

    forms = _forms(settings, number)
    counts = actions.forget(settings, forms, dry_run=dry_run)
    verb = "would erase" if dry_run else "erased"
    for place, count in sorted(counts.items()):
        click.echo(f"{verb} {place}: {count}")
    if not counts:
        click.echo(f"{printable(number)} is in no store or file of this machine")
    published = None
    try:
        if not dry_run:
            published = command.publish(settings, forms)
            click.echo(f"published privacy.forget {published}: every desk agent and consumer erases it too")
    finally:  # what was erased here is audited even when the command could not be published
        audit.record(
            settings.data_dir,
            "forget-dry-run" if dry_run else "forget",
            broker_user=_broker_user(settings),
            number_hash=sorted(forms.hashes)[0],
            places=counts,
            request_id=published,
        )
    click.echo("not erasable in place (retention removes it):")
    for item in actions.not_erasable(settings):
        click.echo(f"  {item['place']}: by {item['until']} ({item['why']})")


@privacy.command("sweep")
@with_settings
def sweep_command(settings: Settings) -> None:
    """Apply every retention setting now to every store and log file of this machine.

    Long-running consumers and desk agents do it once a day on their own.

    \b
    Example:
        tcx-bridge privacy sweep
    """
    from consumers.privacy import actions, audit

    counts = actions.sweep(settings)
    for place, count in sorted(counts.items()):
        click.echo(f"deleted {place}: {count}")
    if not counts:
        click.echo("nothing older than its retention")
    audit.record(settings.data_dir, "sweep", broker_user=None, places=counts)


@privacy.command("audit")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@with_settings
def audit_command(settings: Settings, fmt: str) -> None:
    """Print the audit trail of every report, forget and sweep (numbers only as keyed hashes).

    \b
    Example:
        tcx-bridge privacy audit --format json
    """
    from consumers.privacy import audit

    found = audit.entries(settings.data_dir)
    if fmt == "json":
        click.echo(json.dumps(found, indent=2))
        return
    for entry in found:
        places = ", ".join(f"{place} {count}" for place, count in sorted(entry.get("places", {}).items()))
        broker_user = entry.get("broker_user") or "-"
        click.echo(
            f"{entry['at']} {entry['action']} by {entry['os_user']} (broker {broker_user}) "
            f"number {entry.get('number_hash') or '-'}: {places or 'nothing'}"
        )
