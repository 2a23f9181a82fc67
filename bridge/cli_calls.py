"""The tcx-bridge commands that run the system: consumers, the desk agent, dialing, reports, traffic.

Registered on the group in cli.py.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from bridge.clikit import friendly_errors, loaded, settings_of, with_settings
from bridge.config import Settings


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

    runner = Runner(DeskAgent(settings), settings, max_messages=max_messages)
    runner.install_signal_handlers()
    runner.run()


WAIT_UNTIL = ("confirmed", "dialed")


class DialCommand(click.Command):
    """``dial``: --wait is a flag (it never takes the number); ``--wait=dialed`` and ``--wait dialed``
    (the spellings before --wait-for) still mean ``--wait-for dialed``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        rewritten = list(args)
        for at, arg in enumerate(args[:end]):
            if arg.startswith("--wait="):
                rewritten[at] = "--wait-for=" + arg.removeprefix("--wait=")
            elif arg == "--wait" and at + 1 < end and args[at + 1] in WAIT_UNTIL:
                rewritten[at] = "--wait-for"
        return super().parse_args(ctx, rewritten)


@click.command("dial", cls=DialCommand)
@click.argument("number")
@click.option("--desk", help="The desk that dials (routing key desk.<desk>.dial).")
@click.option("--extension", help="Or the extension that dials (routing key ext.<extension>.dial).")
@click.option("--ttl", type=float, help="Seconds after which the request must not be dialed any more.")
@click.option("--requested-by", help="Who asks (kept in the request and the agent's log).")
@click.option(
    "--wait", is_flag=True, help="Wait for the result; exit 0 once the Assistant confirmed the call."
)
@click.option(
    "--wait-for",
    type=click.Choice(WAIT_UNTIL),
    help="Wait until the Assistant confirmed the call, or only until it ran (dialed). "
    "Exit 1 on anything else.",
)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds --wait waits for the first result.")
@click.pass_context
def dial_command(
    ctx: click.Context,
    number: str,
    desk: str | None,
    extension: str | None,
    ttl: float | None,
    requested_by: str | None,
    wait: bool,
    wait_for: str | None,
    timeout: float,
) -> None:
    """Queue a dial request for a desk's 3CX Assistant.

    The desk is --desk, else --extension, else the root --desk / TCX_BRIDGE_DESK.

    \b
    Example:
        tcx-bridge dial --desk DESK-07 --wait "+41 44 123 45 67" --ttl 60
        tcx-bridge dial --desk DESK-07 --wait-for dialed 0441234567
        tcx-bridge --desk DESK-07 dial 0441234567
    """
    from bridge.dial import ResultWatch, request_dial

    wait_until = wait_for or ("confirmed" if wait else None)
    if desk and extension:
        raise click.UsageError("give at most one of --desk and --extension")
    settings = settings_of(ctx)
    if not desk and not extension:
        desk = settings.desk if loaded(ctx).sources["desk"] != "default" else None  # root flag, env, file
        if not desk:
            raise click.UsageError("give --desk or --extension (or the root --desk / TCX_BRIDGE_DESK)")
    ask = functools.partial(
        request_dial, settings, number, desk=desk, extension=extension, ttl=ttl, requested_by=requested_by
    )
    with friendly_errors():
        if wait_until is None:
            click.echo(f"queued {ask().request_id}")
            return
        with ResultWatch(settings) as watch:
            request = ask(broker=watch.broker)
            click.echo(f"queued {request.request_id}")
            result = watch.wait(request.request_id, timeout=timeout)
            if result is None:
                raise click.ClickException(
                    f"no result for {request.request_id} within {timeout:g}s; is the desk agent running?"
                )
            if wait_until == "confirmed" and result.status == "dialed" and result.confirm_within:
                click.echo(_result_line(result))
                later = watch.wait(request.request_id, timeout=result.confirm_within + 10)
                if later is None:
                    raise click.ClickException(
                        f"no confirmation for {request.request_id} within {result.confirm_within + 10:g}s"
                    )
                result = later
    line = _result_line(result)
    final_dialed = result.status == "dialed" and (wait_until == "dialed" or not result.confirm_within)
    if result.status != "confirmed" and not final_dialed:  # no confirmation coming: dialed is all there is
        raise click.ClickException(line)
    click.echo(line)


def _result_line(result: object) -> str:
    from bridge.events import DialResult

    assert isinstance(result, DialResult)
    line = f"{result.status} {result.number} on {result.desk}"
    if result.call_id:
        line += f" (call id {result.call_id})"
    return line + (f": {result.reason}" if result.reason else "")


@click.command("consume")
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
        from consumers.runtime.runner import Runner

        consumer = load(name)(settings)
        runner = Runner(consumer, settings, max_messages=max_messages, idle_exit=idle_exit)
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
    host = host.strip("[]")  # --host [::1] as in a URL
    from consumers.runtime.runner import Runner
    from consumers.wallboard.consumer import Wallboard
    from consumers.wallboard.web import Fanout, HostCheck, WebServer, is_local, make_app, url_host

    if not is_local(host) and not settings.wallboard_token:
        raise click.ClickException(
            f"--host {host} serves caller numbers beyond this machine: set TCX_BRIDGE_WALLBOARD_TOKEN "
            "(wallboard_token) first, or bind to 127.0.0.1"
        )
    fanout = Fanout()
    hostnames = filter(None, settings.wallboard_hostnames.split(","))
    with friendly_errors():  # a token, once set, is asked for on any bind
        app = make_app(fanout, settings.wallboard_token, hosts=HostCheck(host, hostnames))
    board = Wallboard(settings, masked=mask_numbers)
    board.listeners.append(fanout.publish)
    fanout.publish(board.refresh())
    server = WebServer(app, host, port)
    server.start()
    shown = url_host({"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host))
    click.echo(f"wallboard on http://{shown}:{port}/ (day in {board.current['timezone']})", err=True)
    runner = Runner(board, settings)
    runner.install_signal_handlers()
    try:
        runner.run()
    finally:
        server.stop()


@click.command("simulate")
@click.option("--calls", default=40, show_default=True, help="How many calls.")
@click.option("--desks", default=3, show_default=True, help="Across how many desks (sim-1, sim-2, ...).")
@click.option("--concurrency", default=8, show_default=True, help="Launches running at once, at most.")
@click.option("--seed", default=1, show_default=True, help="Same seed, same traffic.")
@click.option("--speed", default=60.0, show_default=True, help="Simulated seconds per real second.")
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the ground truth here: one JSON line per call, its launches and expected ring/talk bounds.",
)
@with_settings
def simulate_command(
    settings: Settings, calls: int, desks: int, concurrency: int, seed: int, speed: float, truth: Path | None
) -> None:
    """Play realistic call traffic as 3CX Assistant would: one tcx-bridge-notify launch per event.

    \b
    Example:
        tcx-bridge simulate --calls 100 --desks 5 --seed 42
    """
    from bridge.simulate import Timing, notify_command, plan_traffic, play, truth_lines

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
    timings: dict[tuple[int, int], Timing] = {}
    with click.progressbar(length=plan.launches, label=label, file=sys.stderr) as bar:
        outcome = play(
            plan,
            notify_command(),
            env,
            concurrency=concurrency,
            on_launch=lambda *_: bar.update(1),
            timings=timings,
        )
    if truth is not None:
        import json

        with friendly_errors():
            try:
                truth.write_text("".join(json.dumps(line) + "\n" for line in truth_lines(plan, timings)))
            except OSError as error:
                raise click.ClickException(
                    f"cannot write the truth file {str(truth)!r}: {error.strerror}"
                ) from None
    kinds = ", ".join(f"{count} {kind}" for kind, count in plan.kinds.items())
    click.echo(f"{outcome.launched} launches ({kinds}) in {outcome.seconds:.1f}s; {outcome.failed} failed")
    if outcome.failed:
        raise click.ClickException(f"{outcome.failed} launch(es) failed; see {settings.log_dir}/notify.log")


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


COMMANDS = (
    agent_command,
    wallboard_command,
    dial_command,
    consume_command,
    simulate_command,
    demo_command,
)
