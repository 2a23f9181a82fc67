"""The click group ``tcx-bridge``: the only place that configures logging or exits.

Our errors become ``click.ClickException`` (exit 1) at this edge.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from bridge.config import Loaded, Settings, describe, load_settings, redact_url
from bridge.errors import OutboxError, TcxBridgeError

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Our errors as one-line click errors; anything else is a bug and keeps its traceback."""
    try:
        yield
    except TcxBridgeError as error:
        raise click.ClickException(str(error)) from None


def loaded(ctx: click.Context) -> Loaded:
    """The effective settings for this invocation (flags from the group)."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "loaded" not in obj:
        with friendly_errors():
            obj["loaded"] = load_settings(obj.get("flags", {}))
    result: Loaded = obj["loaded"]
    return result


def settings_of(ctx: click.Context) -> Settings:
    return loaded(ctx).settings


def with_settings(command: F) -> F:
    """Pass the effective settings as the first argument; our errors become ClickExceptions."""

    @functools.wraps(command)
    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        settings = settings_of(ctx)
        with friendly_errors():
            return ctx.invoke(command, settings, *args, **kwargs)

    return wrapper  # type: ignore[return-value]  # click's decorators keep the signature


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--amqp-url", help="Broker URL (env TCX_BRIDGE_AMQP_URL).")
@click.option("--namespace", help="Prefix of every exchange and queue (env TCX_BRIDGE_NAMESPACE).")
@click.option("--exchange", help="Events exchange (env TCX_BRIDGE_EXCHANGE).")
@click.option("--desk", "desk_flag", help="This desk's id (env TCX_BRIDGE_DESK).")
@click.option("--extension", "extension_flag", help="The agent's extension (env TCX_BRIDGE_EXTENSION).")
@click.option("--data-dir", help="Outbox, logs and stores (env TCX_BRIDGE_DATA_DIR).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.version_option(package_name="tcx-bridge")
@click.pass_context
def cli(ctx: click.Context, /, verbose: bool, **flags: Any) -> None:
    """tcx-bridge: 3CX Assistant call events on RabbitMQ.

    \b
    Example:
        tcx-bridge config
        tcx-bridge --amqp-url amqp://guest:guest@mq:5672/%2F spool flush
    """
    names = {"desk_flag": "desk", "extension_flag": "extension"}
    ctx.ensure_object(dict)["flags"] = {names.get(key, key): value for key, value in flags.items()}
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("pika").setLevel(logging.CRITICAL)


@cli.command("config")
@click.pass_context
def config_command(ctx: click.Context) -> None:
    """Print the effective configuration and where each value came from (password masked).

    \b
    Example:
        TCX_BRIDGE_DESK=desk-7 tcx-bridge config
    """
    rows = describe(loaded(ctx))
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
    """List outboxed events, oldest first.

    \b
    Example:
        tcx-bridge spool list
    """
    from bridge.outbox import Outbox

    outbox = Outbox(settings.outbox_dir)
    paths = outbox.paths()
    for path in paths:
        try:
            message = outbox.load(path)
        except OutboxError as error:
            click.echo(f"{path.name}  unreadable: {error}")
            continue
        click.echo(f"{path.name}  {message.routing_key}  {message.type}")
    click.echo(f"{len(paths)} event(s) in {settings.outbox_dir}")


@spool.command("flush")
@click.option("--wait", default=30.0, show_default=True, help="Seconds to wait for a replay in progress.")
@with_settings
def spool_flush(settings: Settings, wait: float) -> None:
    """Publish every outboxed event, oldest first; each leaves the outbox after its confirm.

    \b
    Example:
        tcx-bridge spool flush
    """
    from bridge.outbox import Outbox
    from bridge.topology import publish_event
    from bridge.transport import Broker

    outbox = Outbox(settings.outbox_dir)
    with Broker(settings.amqp_url, ca_file=settings.ca_file) as broker:
        result = outbox.replay(lambda message: publish_event(broker, settings, message), wait=wait)
    if result.locked_out:
        raise click.ClickException(
            f"another process is replaying the outbox; {result.remaining} event(s) wait"
        )
    click.echo(
        f"flushed {result.published} event(s) to {redact_url(settings.amqp_url)}; {result.remaining} left"
    )


@cli.command("agent")
@click.option("--max-messages", type=int, help="Stop after this many messages (for tests and demos).")
@with_settings
def agent_command(settings: Settings, max_messages: int | None) -> None:
    """Run the desk agent: dial requests and screen pops for this desk, outbox replays.

    \b
    Example:
        TCX_BRIDGE_DESK=DESK-07 TCX_BRIDGE_EXTENSION=107 tcx-bridge agent
    """
    from consumers.agent import DeskAgent
    from consumers.runtime import Runner

    runner = Runner(DeskAgent(settings), settings, max_messages=max_messages)
    runner.install_signal_handlers()
    runner.run()


@cli.command("dial")
@click.argument("number")
@click.option("--desk", help="The desk that dials (routing key desk.<desk>.dial).")
@click.option("--extension", help="Or the extension that dials (routing key ext.<extension>.dial).")
@click.option("--ttl", type=float, help="Seconds after which the request must not be dialed any more.")
@click.option("--requested-by", help="Who asks (kept in the request and the agent's log).")
@click.option("--wait", is_flag=True, help="Wait for the result; exit 1 unless the number was dialed.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds --wait waits for the result.")
@with_settings
def dial_command(
    settings: Settings,
    number: str,
    desk: str | None,
    extension: str | None,
    ttl: float | None,
    requested_by: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """Queue a dial request for a desk's 3CX Assistant.

    \b
    Example:
        tcx-bridge dial --desk DESK-07 "+41 44 123 45 67" --ttl 60 --wait
    """
    from bridge.dial import ResultWatch, request_dial

    if bool(desk) == bool(extension):
        raise click.UsageError("give exactly one of --desk and --extension")
    if not wait:
        request = request_dial(
            settings, number, desk=desk, extension=extension, ttl=ttl, requested_by=requested_by
        )
        click.echo(f"queued {request.request_id}")
        return
    with ResultWatch(settings) as watch:
        request = request_dial(
            settings,
            number,
            desk=desk,
            extension=extension,
            ttl=ttl,
            requested_by=requested_by,
            broker=watch.broker,
        )
        click.echo(f"queued {request.request_id}")
        result = watch.wait(request.request_id, timeout=timeout)
    if result is None:
        raise click.ClickException(
            f"no result for {request.request_id} within {timeout:g}s; is the desk agent running?"
        )
    line = f"{result.status} {result.number} on {result.desk}" + (
        f": {result.reason}" if result.reason else ""
    )
    if result.status != "dialed":
        raise click.ClickException(line)
    click.echo(line)


@cli.command("consume")
@click.argument("name", required=False)
@click.option("--list", "list_them", is_flag=True, help="List the consumers and exit.")
@click.option("--max-messages", type=int, help="Stop after this many messages (for tests and benchmarks).")
@click.option("--idle-exit", type=float, help="Stop after this many seconds without a message.")
@click.pass_context
def consume_command(
    ctx: click.Context, name: str | None, list_them: bool, max_messages: int | None, idle_exit: float | None
) -> None:
    """Run a consumer until SIGTERM or Ctrl-C.

    \b
    Example:
        tcx-bridge consume crm
        tcx-bridge consume --list
    """
    import importlib

    from consumers import CONSUMERS

    if list_them:
        for known, (_, _, about) in CONSUMERS.items():
            click.echo(f"{known:<10} {about}")
        return
    if name not in CONSUMERS:
        raise click.BadParameter(
            f"{name!r} is not a consumer; choose from {', '.join(CONSUMERS)}", param_hint="NAME"
        )
    settings = settings_of(ctx)
    module, cls, _ = CONSUMERS[name]
    with friendly_errors():
        from consumers.runtime import Runner

        consumer = getattr(importlib.import_module(module), cls)(settings)
        runner = Runner(consumer, settings, max_messages=max_messages, idle_exit=idle_exit)
        runner.install_signal_handlers()
        runner.run()


@cli.group()
def contacts() -> None:
    """The embedded SQLite contacts store the CRM consumer looks callers up in."""


@contacts.command("import")
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Delete every contact first.")
@with_settings
def contacts_import(settings: Settings, csv_file: Path, replace: bool) -> None:
    """Import contacts from a CSV file (header: name, phone; optional company, email, url; others kept).

    \b
    Example:
        tcx-bridge contacts import contacts.csv
    """
    from consumers.contacts import SqliteContacts
    from consumers.crm import contacts_path

    store = SqliteContacts(contacts_path(settings))
    imported, problems = store.import_csv(csv_file, settings.region, replace=replace)
    for problem in problems[:20]:
        click.echo(f"{csv_file}: {problem}", err=True)
    if len(problems) > 20:
        click.echo(f"{csv_file}: ... and {len(problems) - 20} more skipped", err=True)
    click.echo(
        f"imported {imported} contact(s), skipped {len(problems)}; "
        f"{store.count()} in {contacts_path(settings)}"
    )


@cli.command("report")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
@click.option("--calls", is_flag=True, help="Print the per-call records instead of the summaries.")
@click.option("--direction", type=click.Choice(["inbound", "outbound", "unknown"]), help="Only these calls.")
@with_settings
def report_command(settings: Settings, fmt: str, calls: bool, direction: str | None) -> None:
    """Call analytics: per-day and per-desk summaries, or the per-call records.

    \b
    Example:
        tcx-bridge report
        tcx-bridge report --calls --format json
    """
    import csv
    import json

    from consumers.analytics import database_path
    from consumers.report import CALL_COLUMNS, COLUMNS, load_calls, render_table, report

    records = load_calls(database_path(settings), direction)
    if calls:
        if fmt == "json":
            click.echo(json.dumps(records, indent=2))
        elif fmt == "csv":
            writer = csv.DictWriter(sys.stdout, fieldnames=CALL_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)
        else:
            click.echo(render_table(records, CALL_COLUMNS))
        return
    summary = report(records)
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=["group", "key", *COLUMNS], lineterminator="\n")
        writer.writeheader()
        for group, key in (("by_day", "day"), ("by_desk", "desk")):
            for row in summary[group]:
                writer.writerow({"group": key, "key": row[key], **{c: row[c] for c in COLUMNS}})
    else:
        click.echo("Calls by day (UTC)")
        click.echo(render_table(summary["by_day"], ["day", *COLUMNS]))
        click.echo("")
        click.echo("Calls by desk")
        click.echo(render_table(summary["by_desk"], ["desk", *COLUMNS]))


@cli.group()
def topology() -> None:
    """Every exchange, queue, binding and dead-letter route tcx-bridge uses."""


@topology.command("declare")
@click.option("--desk", "desks", multiple=True, help="Also declare this desk agent's queue (repeatable).")
@with_settings
def topology_declare(settings: Settings, desks: tuple[str, ...]) -> None:
    """Declare everything (idempotent, safe on a live system).

    \b
    Example:
        tcx-bridge topology declare --desk DESK-07 --desk DESK-08
    """
    from bridge.transport import Broker
    from consumers.topology import declare_all, expected

    with Broker(settings.amqp_url, ca_file=settings.ca_file) as broker:
        declare_all(broker, settings, list(desks))
    entities = expected(settings, list(desks))
    click.echo(f"declared {len(entities)} exchanges and queues on {redact_url(settings.amqp_url)}")


@topology.command("show")
@click.option("--desk", "desks", multiple=True, help="Also show this desk agent's queues (repeatable).")
@with_settings
def topology_show(settings: Settings, desks: tuple[str, ...]) -> None:
    """Show what exists on the broker: each exchange and queue, its messages and consumers.

    \b
    Example:
        tcx-bridge topology show --desk DESK-07
    """
    from bridge.transport import Broker
    from consumers.topology import expected, inspect

    with Broker(settings.amqp_url, ca_file=settings.ca_file) as broker:
        rows = inspect(broker, expected(settings, list(desks)))
    width = max(len(entity.name) for entity, _ in rows)
    for entity, state in rows:
        click.echo(f"{entity.kind:<8} {entity.name:<{width}}  {state:<28} {entity.about}")


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


@cli.command("simulate")
@click.option("--calls", default=40, show_default=True, help="How many calls.")
@click.option("--desks", default=3, show_default=True, help="Across how many desks (sim-1, sim-2, ...).")
@click.option("--concurrency", default=8, show_default=True, help="Launches running at once, at most.")
@click.option("--seed", default=1, show_default=True, help="Same seed, same traffic.")
@click.option("--speed", default=60.0, show_default=True, help="Simulated seconds per real second.")
@with_settings
def simulate_command(
    settings: Settings, calls: int, desks: int, concurrency: int, seed: int, speed: float
) -> None:
    """Play realistic call traffic as 3CX Assistant would: one tcx-bridge-notify launch per event.

    \b
    Example:
        tcx-bridge simulate --calls 100 --desks 5 --seed 42
    """
    from bridge.simulate import notify_command, plan_traffic, play

    if min(calls, desks, concurrency) < 1 or speed <= 0:
        raise click.BadParameter("--calls, --desks, --concurrency and --speed must be positive")
    plan = plan_traffic(calls, [f"sim-{n + 1}" for n in range(desks)], seed=seed, speed=speed)
    env = {
        **os.environ,
        "TCX_BRIDGE_AMQP_URL": settings.amqp_url,
        "TCX_BRIDGE_NAMESPACE": settings.namespace,
        "TCX_BRIDGE_EXCHANGE": settings.exchange,
        "TCX_BRIDGE_DATA_DIR": settings.data_dir,
    }
    label = f"{calls} calls, {plan.launches} launches"
    with click.progressbar(length=plan.launches, label=label, file=sys.stderr) as bar:
        outcome = play(
            plan, notify_command(), env, concurrency=concurrency, on_launch=lambda *_: bar.update(1)
        )
    kinds = ", ".join(f"{count} {kind}" for kind, count in plan.kinds.items())
    click.echo(f"{outcome.launched} launches ({kinds}) in {outcome.seconds:.1f}s; {outcome.failed} failed")
    if outcome.failed:
        raise click.ClickException(f"{outcome.failed} launch(es) failed; see {settings.log_dir}/notify.log")


@cli.command("demo")
@click.option("--calls", default=30, show_default=True, help="How many calls to simulate.")
@click.option("--seed", default=7, show_default=True, help="Same seed, same traffic.")
@with_settings
def demo_command(settings: Settings, calls: int, seed: int) -> None:
    """See the whole system work: topology, contacts, consumers, desk agent, calls, a dial, the report.

    Uses TCX_BRIDGE_AMQP_URL (default: the local broker), with a namespace and a
    data dir of its own that it removes at the end.

    \b
    Example:
        tcx-bridge demo
    """
    from consumers.demo import run_demo

    run_demo(settings, click.echo, calls=calls, seed=seed)


def main() -> None:
    """Entry point of ``tcx-bridge``."""
    cli(prog_name="tcx-bridge")


if __name__ == "__main__":
    main()
