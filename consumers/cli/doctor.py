"""``tcx-bridge doctor``: the checks an admin runs first on a new desk or server (consumers.tools.doctor).

Registered in the entry-point group ``tcx_bridge.commands``.
"""

from __future__ import annotations

import sys

import click

from bridge.clikit import loaded


@click.command("doctor")
@click.pass_context
def doctor_command(ctx: click.Context) -> None:
    """Check this desk or server: configuration, each broker, data dir and outbox, the 3CX Assistant.

    One line per check, with the fix for each that fails; exit 1 if any fails.

    \b
    Example:
        tcx-bridge doctor
    """
    from consumers.tools.doctor import run_checks

    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    good, bad = ("\u2713", "\u2717") if _can_encode("\u2713\u2717", encoding) else ("ok", "X ")
    failed = 0
    for check in run_checks(loaded(ctx)):
        click.echo(f"{good if check.ok else bad} {check.what}" + (f" -> {check.fix}" if check.fix else ""))
        failed += not check.ok
    if failed:
        raise click.ClickException(f"{failed} check(s) failed")


def _can_encode(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True
