"""The wire's own commands that make calls: ``dial`` (a dial request, and its result) and ``simulate``.

Registered on the group in cli.py; the commands that run consumers come from consumers/cli.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bridge.clikit import friendly_errors, loaded, settings_of, with_settings
from bridge.config import Settings

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
    from bridge.dial import request_dial

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
        result = _dial_and_wait(settings, ask, wait_until, timeout, desk)
    line = _result_line(result)
    final_dialed = result.status == "dialed" and (wait_until == "dialed" or not result.confirm_within)
    if result.status != "confirmed" and not final_dialed:  # no confirmation coming: dialed is all there is
        raise click.ClickException(line)
    click.echo(line)


def _dial_and_wait(
    settings: Settings, ask: Callable[..., Any], wait_until: str, timeout: float, desk: str | None
) -> Any:
    """Queue the request while watching the results; the first result, or the confirmation after dialed."""
    from bridge.dial import ResultWatch

    with ResultWatch(settings) as watch:
        request = ask(broker=watch.broker)
        click.echo(f"queued {request.request_id}")
        result = watch.wait(request.request_id, timeout=timeout, desk=desk)
        if result is None:
            raise click.ClickException(
                f"no result for {request.request_id} within {timeout:g}s; is the desk agent running?"
            )
        if wait_until == "confirmed" and result.status == "dialed" and result.confirm_within:
            click.echo(_result_line(result))
            within = result.confirm_within + 10
            later = watch.wait(request.request_id, timeout=within, desk=desk or result.desk)
            if later is None:
                raise click.ClickException(f"no confirmation for {request.request_id} within {within:g}s")
            result = later
    return result


def _result_line(result: object) -> str:
    from bridge.events import DialResult

    assert isinstance(result, DialResult)
    line = f"{result.status} {result.number} on {result.desk}"
    if result.call_id:
        line += f" (call id {result.call_id})"
    return line + (f": {result.reason}" if result.reason else "")


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


COMMANDS = (dial_command, simulate_command)
