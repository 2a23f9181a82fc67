"""``tcx-bridge webhooks``: list the targets, test one, replay its dead letters, make a secret, enable one.

Registered in the entry-point group ``tcx_bridge.commands`` (pyproject.toml).
"""

from __future__ import annotations

import click

from bridge.clikit import with_settings
from bridge.config import Settings
from bridge.errors import TransportError


@click.group("webhooks")
def webhooks() -> None:
    """Signed webhooks to HTTP endpoints (consume webhooks): targets, tests, dead letters, secrets."""


@webhooks.command("list")
@with_settings
def list_command(settings: Settings) -> None:
    """Each [[webhooks]] target: format, URL, state, backlog, dead letters, last status.

    The state is what `consume webhooks` last wrote in this data dir.

    \b
    Example:
        tcx-bridge webhooks list
    """
    from bridge.transport import Broker
    from consumers.webhooks.operations import rows

    try:
        with Broker(settings.amqp_url, ca_file=settings.ca_file) as broker:
            found = rows(settings, broker)
    except TransportError as error:
        click.echo(f"(broker unreachable, no backlog: {error})", err=True)
        found = rows(settings, None)
    if not found:
        click.echo("no [[webhooks]] targets configured (docs/webhooks.md)")
        return
    header = ("name", "format", "url", "state", "backlog", "dead", "last status")
    table = [header, *found]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@webhooks.command("test")
@click.argument("name")
@with_settings
def test_command(settings: Settings, name: str) -> None:
    """Send one signed sample event (an inbound call at desk `test`) to NAME; print status and latency.

    Exit 1 when the target does not take it.

    \b
    Example:
        tcx-bridge webhooks test helpdesk
    """
    from consumers.webhooks.guard import check_url
    from consumers.webhooks.operations import send_test
    from consumers.webhooks.settings import target_named

    target = target_named(settings, name)
    check_url(target.name, target.url, target.allow_private)
    result = send_test(settings, target)
    status = result.status if result.status is not None else "no answer"
    line = f"{name}: {status} in {result.seconds * 1000:.1f} ms"
    if result.verdict != "delivered":
        raise click.ClickException(f"{line}: {result.reason}")
    click.echo(line)


@webhooks.command("replay")
@click.argument("name")
@click.option("--limit", type=int, help="Move at most this many (oldest first).")
@with_settings
def replay_command(settings: Settings, name: str, limit: int | None) -> None:
    """Move NAME's dead letters back into its queue, to be delivered again (oldest first).

    Run it as the webhooks' broker user (tcx-webhooks), whose retries the consumer believes.

    \b
    Example:
        TCX_BRIDGE_AMQP_URL=amqp://tcx-webhooks:…@rabbit/ tcx-bridge webhooks replay helpdesk
    """
    from bridge.transport import Broker
    from consumers.webhooks.operations import replay
    from consumers.webhooks.settings import target_named

    target = target_named(settings, name)
    with Broker(settings.amqp_url, ca_file=settings.ca_file) as broker:
        moved = replay(broker, settings, target, limit)
    click.echo(f"replayed {moved} dead letter(s) of {name}")


@webhooks.command("secret")
def secret_command() -> None:
    """Print a new whsec_ signing secret (Standard Webhooks form).

    \b
    Example:
        tcx-bridge webhooks secret > /etc/tcx-bridge/helpdesk.secret
    """
    from consumers.webhooks.signing import new_secret

    click.echo(new_secret())


@webhooks.command("enable")
@click.argument("name")
@with_settings
def enable_command(settings: Settings, name: str) -> None:
    """Resume a paused target now, instead of after its resume_after (where the consumer runs).

    \b
    Example:
        tcx-bridge webhooks enable helpdesk
    """
    from consumers.webhooks.settings import target_named
    from consumers.webhooks.state import request_enable

    target_named(settings, name)
    request_enable(settings.data_dir, name)
    click.echo(
        f"asked consume webhooks to resume {name} (within a second, where it runs on {settings.data_dir})"
    )
