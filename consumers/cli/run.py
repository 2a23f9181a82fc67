"""The commands that run consumers: ``consume NAME``, ``agent``, ``wallboard``, ``demo``.

Registered in the entry-point group ``tcx_bridge.commands`` (pyproject.toml); the
root group of ``bridge/cli.py`` finds them there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from bridge.clikit import friendly_errors, settings_of, with_settings
from bridge.config import Settings
from bridge.errors import ConfigError
from consumers.wallboard.settings import WALLBOARD

if TYPE_CHECKING:
    from consumers.runtime.runner import Runner


@click.command("agent")
@click.option("--max-messages", type=int, help="Stop after this many messages (for tests and demos).")
@with_settings
def agent_command(settings: Settings, max_messages: int | None) -> None:
    """Run the desk agent: dial requests and screen pops for this desk, outbox replays.

    \b
    Example:
        TCX_BRIDGE_DESK=DESK-07 TCX_BRIDGE_EXTENSION=107 tcx-bridge agent
    """
    from consumers.agent.consumer import DeskAgent
    from consumers.runtime.runner import Runner

    agent = DeskAgent(settings)
    runner = Runner(agent, settings, max_messages=max_messages)
    runner.install_signal_handlers()
    agent.start_handoff()  # launches hand their events over from now on (stopped by close())
    runner.run()


@click.command("consume")
@click.argument("name", required=False)
@click.option("--list", "list_them", is_flag=True, help="List the consumers and exit.")
@click.option("--max-messages", type=int, help="Stop after this many messages (for tests and benchmarks).")
@click.option("--idle-exit", type=float, help="Stop after this many seconds without a message.")
@click.option(
    "--from",
    "origin",
    metavar="first|TIME|OFFSET",
    help="First read the history stream from there (RFC 3339 time or offset), then go on live.",
)
@click.pass_context
def consume_command(
    ctx: click.Context,
    name: str | None,
    list_them: bool,
    max_messages: int | None,
    idle_exit: float | None,
    origin: str | None,
) -> None:
    """Run a consumer until SIGTERM or Ctrl-C.

    With --from, it first backfills from the history stream (events it missed, each
    handled once), then consumes its live queue; an interrupted backfill resumes from
    the offset its store recorded (docs/history.md).

    \b
    Example:
        tcx-bridge consume crm
        tcx-bridge consume analytics --from 2026-11-02T00:00:00Z
        tcx-bridge consume --list
    """
    from consumers.runtime.plugins import installed, load

    if list_them:
        for plugin in installed():
            origin = f"{plugin.package} {plugin.version}"
            if plugin.error:
                click.echo(f"{plugin.name:<14} {origin:<22} BROKEN: {plugin.error}")
            else:
                click.echo(f"{plugin.name:<14} {origin:<22} {plugin.about}")
        return
    if not name:
        raise click.UsageError("give the consumer's NAME (tcx-bridge consume --list shows them)")
    settings = settings_of(ctx)
    with friendly_errors():
        start = None
        if origin is not None:
            from bridge.history import parse_offset

            try:
                start = parse_offset(origin)
            except ConfigError as error:
                raise click.BadParameter(str(error).removeprefix("--from: "), param_hint="--from") from None
        consumer = load(name)(settings)
        runner = consumer.make_runner(settings, max_messages=max_messages, idle_exit=idle_exit)
        if start is not None and origin is not None:
            from consumers.runtime.backfill import Backfill
            from consumers.runtime.runner import Runner

            if not isinstance(runner, Runner):
                raise ConfigError(
                    f"consumer {name!r} does not run on the shared runner: --from cannot backfill it"
                )
            Backfill(runner, start, origin)
        runner.install_signal_handlers()
        runner.run()


@click.command("wallboard")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to serve on; others need a token."
)
@click.option("--port", default=8080, show_default=True, help="Port to serve on.")
@click.option("--mask-numbers", is_flag=True, help="Show only the last four digits of caller numbers.")
@with_settings
def wallboard_command(settings: Settings, host: str, port: int, mask_numbers: bool) -> None:
    """Serve the supervisor's live wallboard: every desk, waiting callers, today's figures.

    Consumes the call events (queue <namespace>.wallboard) and pushes every change
    to the browsers within a second. Binding to anything but 127.0.0.1 needs
    wallboard_token (TCX_BRIDGE_WALLBOARD_TOKEN, 16 characters at least); names
    browsers use besides the bind address go in wallboard_hostnames.

    \b
    Example:
        tcx-bridge wallboard --port 8080
        TCX_BRIDGE_WALLBOARD_TOKEN=... tcx-bridge wallboard --host 0.0.0.0 --mask-numbers
    """
    options = WALLBOARD.of(settings)
    host = host.strip("[]")  # --host [::1] as in a URL
    from bridge.values import host_port
    from consumers.runtime.runner import Runner
    from consumers.wallboard.consumer import Wallboard
    from consumers.wallboard.web import Fanout, HostCheck, WebServer, is_local

    try:
        from consumers.wallboard.routes import make_app
    except ImportError:
        raise click.ClickException(
            "the wallboard needs Starlette and uvicorn: pip install 'tcx-bridge[wallboard]'"
        ) from None

    if not is_local(host) and not options.wallboard_token:
        raise click.ClickException(
            f"--host {host} serves caller numbers beyond this machine: set TCX_BRIDGE_WALLBOARD_TOKEN "
            "(wallboard_token) first, or bind to 127.0.0.1"
        )
    fanout = Fanout()
    hostnames = filter(None, options.wallboard_hostnames.split(","))
    with friendly_errors():  # a token, once set, is asked for on any bind
        from consumers.callbacks.web import dial_routes  # the Call back button, with wallboard_dial_token

        routes = dial_routes(settings, options.wallboard_token)
        app = make_app(fanout, options.wallboard_token, hosts=HostCheck(host, hostnames), routes=routes)
    board = Wallboard(settings, masked=mask_numbers)
    from consumers.callbacks.panel import Panel

    board.panels.append(Panel(settings, masked=mask_numbers))  # the Callbacks panel
    board.listeners.append(fanout.publish)
    fanout.publish(board.refresh())
    server = WebServer(app, host, port)
    server.start()
    shown = host_port({"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host), port)
    click.echo(f"wallboard on http://{shown}/ (day in {board.current['timezone']})", err=True)
    runner = Runner(board, settings)
    resume(runner, settings)
    runner.install_signal_handlers()
    try:
        runner.run()
    finally:
        server.stop()


def resume(runner: Runner, settings: Settings) -> None:
    """The wallboard builds its day from the history at start: a backfill from the local day's start,
    once a day (recorded in its store: a store lost or new is filled again from the history)."""
    from datetime import UTC, datetime

    from consumers.runtime.backfill import Backfill
    from consumers.wallboard.state import day_of, zone_of

    now = datetime.now(UTC)
    start = datetime.combine(day_of(settings, now), datetime.min.time(), zone_of(settings)).astimezone(UTC)
    Backfill(runner, start, start.strftime("%Y-%m-%dT%H:%M:%SZ"), required=False)


@click.command("demo")
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
    from consumers.tools.demo import run_demo

    run_demo(settings, click.echo, calls=calls, seed=seed)
