"""The click group ``tcx-bridge``: the only place that configures logging or exits.

Our errors become ``click.ClickException`` (exit 1) at this edge.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from bridge.cli_access import COMMANDS as ACCESS_COMMANDS
from bridge.cli_calls import COMMANDS
from bridge.cli_history import history_command
from bridge.clikit import (
    SettingOption,
    SettingsGroup,
    configure_logging,
    loaded,
    with_settings,
    without_settings,
)
from bridge.config import Settings, describe, redact_url
from bridge.errors import OutboxError, check_directory


@click.group(cls=SettingsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--amqp-url", cls=SettingOption, help="Broker URL (env TCX_BRIDGE_AMQP_URL).")
@click.option(
    "--namespace", cls=SettingOption, help="Prefix of every exchange and queue (env TCX_BRIDGE_NAMESPACE)."
)
@click.option("--exchange", cls=SettingOption, help="Events exchange (env TCX_BRIDGE_EXCHANGE).")
@click.option("--desk", "desk_flag", cls=SettingOption, help="This desk's id (env TCX_BRIDGE_DESK).")
@click.option(
    "--extension",
    "extension_flag",
    cls=SettingOption,
    help="The agent's extension (env TCX_BRIDGE_EXTENSION).",
)
@click.option("--data-dir", cls=SettingOption, help="Outbox, logs and stores (env TCX_BRIDGE_DATA_DIR).")
@click.option(
    "--store-url",
    cls=SettingOption,
    help="Consumers' store: postgresql://user@host/db; unset: SQLite files (env TCX_BRIDGE_STORE_URL).",
)
@click.option(
    "--metrics-port",
    cls=SettingOption,
    type=int,
    help="Serve /metrics, /healthz, /readyz (env TCX_BRIDGE_METRICS_PORT).",
)
@click.option(
    "--log-format",
    cls=SettingOption,
    type=click.Choice(["text", "json"]),
    help="json: one object per line (env TCX_BRIDGE_LOG_FORMAT).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.version_option(package_name="tcx-bridge")
@click.pass_context
def cli(ctx: click.Context, /, verbose: bool, **flags: Any) -> None:
    """tcx-bridge: 3CX Assistant call events on RabbitMQ.

    Each setting flag below is also accepted after the command it applies to
    (`tcx-bridge consume crm --metrics-port 9464`).

    \b
    Example:
        tcx-bridge config
        tcx-bridge --amqp-url amqp://guest:guest@mq:5672/%2F spool flush
    """
    names = {"desk_flag": "desk", "extension_flag": "extension"}
    ctx.ensure_object(dict)["flags"] = {names.get(key, key): value for key, value in flags.items()}
    configure_logging(verbose=verbose)


@cli.command("config")
@click.pass_context
def config_command(ctx: click.Context) -> None:
    """Print the effective configuration and where each value came from (password masked).

    \b
    Example:
        TCX_BRIDGE_DESK=desk-7 tcx-bridge config
    """
    settings = loaded(ctx)  # checked there, region against phonenumbers too
    rows = describe(settings)
    width = max(len(row[0]) for row in rows)
    env_width = max(len(row[1]) for row in rows)
    for name, env, value, source in rows:
        click.echo(f"{name:<{width}}  {env:<{env_width}}  {value or '-'}  ({source})")


@cli.group()
def spool() -> None:
    """The local outbox of events that could not be published yet."""


@spool.command("list")
@with_settings
def spool_list(settings: Settings) -> None:
    """List outboxed events, oldest first, then those the broker refused for good, with why.

    \b
    Example:
        tcx-bridge spool list
    """
    from bridge.outbox import Outbox

    check_directory(settings.outbox_dir)
    outbox = Outbox(settings.outbox_dir)
    paths = outbox.paths()
    for path in paths:
        try:
            message = outbox.load(path)
        except OutboxError as error:
            click.echo(f"{path.name}  unreadable: {error}")
            continue
        click.echo(f"{path.name}  {message.routing_key}  {message.type}")
    orphans = outbox.orphans()
    for path in orphans:
        click.echo(f"{path.name}  orphan: left by a launch killed while writing; the next replay recovers it")
    refused = outbox.refused()
    for entry in refused:
        try:
            message = outbox.load(entry.path)
            what = f"{message.routing_key}  {message.type}"
        except OutboxError:
            what = "unreadable"
        click.echo(f"{entry.path.name}  {what}  refused: {entry.reason}")
    click.echo(
        f"{len(paths)} event(s) in {settings.outbox_dir}" + (f", {len(orphans)} orphan(s)" if orphans else "")
    )
    if refused:
        click.echo(
            f"{len(refused)} refused for good in {outbox.refused_dir}: fix the cause, then "
            "`tcx-bridge spool retry ID` (or --all); `tcx-bridge spool drop ID` deletes one"
        )


@spool.command("flush")
@click.option("--wait", default=30.0, show_default=True, help="Seconds to wait for a replay in progress.")
@with_settings
def spool_flush(settings: Settings, wait: float) -> None:
    """Publish every outboxed event, oldest first; each leaves the outbox after its confirm.

    An event the broker refuses for good (a missing right, an exchange that cannot
    exist for this user) is moved to the outbox's refused/ and the rest go on.

    \b
    Example:
        tcx-bridge spool flush
    """
    from bridge.outbox import Outbox
    from bridge.topology import publish_events
    from bridge.transport import Broker

    check_directory(settings.outbox_dir)
    outbox = Outbox(settings.outbox_dir)
    with Broker(settings.amqp_url, ca_file=settings.ca_file) as broker:
        result = outbox.replay(publish_batch=functools.partial(publish_events, broker, settings), wait=wait)
    if result.locked_out:
        raise click.ClickException(
            f"another process is replaying the outbox; {result.remaining} event(s) wait"
        )
    click.echo(
        f"flushed {result.published} event(s) to {redact_url(settings.amqp_url)}; {result.remaining} left"
        + (
            f"; {result.refused} refused for good, moved to {outbox.refused_dir} "
            "(`tcx-bridge spool list` says why)"
            if result.refused
            else ""
        )
    )


@spool.command("retry")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "every", is_flag=True, help="Every refused event.")
@with_settings
def spool_retry(settings: Settings, ids: tuple[str, ...], every: bool) -> None:
    """Move refused events back into the outbox, in their old place, for the next replay.

    ID is an event id as `spool list` shows it (its file name, or a unique start
    of the event id). Fix what the broker refused first (the user's rights, the
    desk setting), or they are refused again.

    \b
    Example:
        tcx-bridge spool retry 3f2b9c1e
        tcx-bridge spool retry --all && tcx-bridge spool flush
    """
    from bridge.outbox import Outbox

    if bool(ids) == every:
        raise click.UsageError("give the id of a refused event (see `tcx-bridge spool list`) or --all")
    check_directory(settings.outbox_dir)
    moved = Outbox(settings.outbox_dir).retry(None if every else list(ids))
    click.echo(
        f"moved {len(moved)} event(s) back to {settings.outbox_dir}; "
        "the next replay (or `tcx-bridge spool flush`) publishes them"
    )


@spool.command("drop")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@with_settings
def spool_drop(settings: Settings, ids: tuple[str, ...]) -> None:
    """Delete refused events for good: the only way an event leaves the outbox unpublished.

    Each ID is named on its own (there is no --all); an unknown ID deletes nothing.

    \b
    Example:
        tcx-bridge spool drop 3f2b9c1e
    """
    from bridge.outbox import Outbox

    check_directory(settings.outbox_dir)
    for dropped in Outbox(settings.outbox_dir).drop(ids):
        click.echo(f"dropped {dropped.path.name} (refused: {dropped.reason})")


@cli.group()
def topology() -> None:
    """Every exchange, queue, binding and dead-letter route tcx-bridge uses."""


def _desk_ids(_: click.Context, __: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """--desk values (DESK or DESK,EXTENSION) that a desk's settings would take (bridge.events' limits),
    else exit 2 naming one."""
    from bridge.events import desk_problem

    for value in values:
        desk = value.split(",", 1)[0].strip()
        problem = desk_problem(desk)
        if problem:
            raise click.BadParameter(f"{desk!r} {problem}")
    return values


FC = TypeVar("FC", bound=Callable[..., Any])


def _desk_option(help_text: str) -> Callable[[FC], FC]:
    """topology's repeatable --desk (checked as a desk's settings would check it)."""
    return click.option("--desk", "desks", multiple=True, callback=_desk_ids, help=help_text)


@topology.command("declare")
@_desk_option(
    "Also declare this desk agent's queue: DESK or DESK,EXTENSION (also binds ext.<EXTENSION>.*); repeatable."
)
@with_settings
def topology_declare(settings: Settings, desks: tuple[str, ...]) -> None:
    """Declare everything (idempotent, safe on a live system).

    \b
    Example:
        tcx-bridge topology declare --desk DESK-07,107 --desk DESK-08
    """
    from bridge.inventory import declare_all, expected
    from bridge.transport import Broker

    with Broker(settings.amqp_url, ca_file=settings.ca_file) as broker:
        declare_all(broker, settings, list(desks))
    entities = expected(settings, list(desks))
    click.echo(f"declared {len(entities)} exchanges and queues on {redact_url(settings.amqp_url)}")


@topology.command("show")
@_desk_option("Also show this desk agent's queues (repeatable).")
@with_settings
def topology_show(settings: Settings, desks: tuple[str, ...]) -> None:
    """Show what exists on the broker: each exchange and queue, its messages and consumers.

    \b
    Example:
        tcx-bridge topology show --desk DESK-07
    """
    from bridge.inventory import expected, inspect
    from bridge.transport import Broker

    with Broker(settings.amqp_url, ca_file=settings.ca_file) as broker:
        rows = inspect(broker, expected(settings, list(desks)))
    width = max(len(entity.name) for entity, _ in rows)
    state_width = max([28, *(len(state) for _, state in rows)])
    for entity, state in rows:
        click.echo(f"{entity.kind:<8} {entity.name:<{width}}  {state:<{state_width}}  {entity.about}")


@topology.command("delete")
@_desk_option("Also delete this desk agent's queue (repeatable).")
@click.option("--yes", is_flag=True, help="Delete them; without it, only list what would go.")
@with_settings
def topology_delete(settings: Settings, desks: tuple[str, ...], yes: bool) -> None:
    """Delete the namespace's exchanges and queues (those `topology show` lists), with what they hold.

    For a namespace no longer used (a test, a trial, a site moved). Stop its
    processes first; the history stream and every queued event go with it.

    \b
    Example:
        tcx-bridge --namespace trial topology delete --desk DESK-07 --yes
    """
    from bridge.inventory import expected, inspect
    from bridge.transport import Broker

    with Broker(settings.amqp_url, ca_file=settings.ca_file) as broker:
        present = [entity for entity, state in inspect(broker, expected(settings, list(desks)))
                   if state != "MISSING"]  # fmt: skip
        if not yes:
            for entity in present:
                click.echo(f"would delete {entity.kind} {entity.name}")
            raise click.ClickException(
                f"{len(present)} exchanges and queues of namespace {settings.namespace!r} on "
                f"{redact_url(settings.amqp_url)}: give --yes to delete them"
            )
        for entity in present:
            if entity.kind == "queue":
                broker.delete_queue(entity.name)
            else:
                broker.delete_exchange(entity.name)
            click.echo(f"deleted {entity.kind} {entity.name}")
    click.echo(f"deleted {len(present)} exchanges and queues of namespace {settings.namespace!r}")


@without_settings
@cli.command("schema")
@click.option("--asyncapi", "as_asyncapi", is_flag=True, help="An AsyncAPI 3 document instead.")
@click.option("--markdown", is_flag=True, help="docs/messages.md instead.")
def schema_command(as_asyncapi: bool, markdown: bool) -> None:
    """Print the JSON Schema of every message, generated from the msgspec types.

    \b
    Example:
        tcx-bridge schema --asyncapi > asyncapi.json
        tcx-bridge schema --markdown > docs/messages.md
    """
    import json

    from bridge.schema import asyncapi, json_schemas, render_markdown

    if markdown:
        click.echo(render_markdown(), nl=False)
    else:
        click.echo(json.dumps(asyncapi() if as_asyncapi else json_schemas(), indent=2))


for command in (*COMMANDS, *ACCESS_COMMANDS, history_command):
    cli.add_command(command)


def main() -> None:
    """Entry point of ``tcx-bridge``."""
    cli(prog_name="tcx-bridge")


if __name__ == "__main__":
    main()
