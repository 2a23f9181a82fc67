"""``tcx-bridge history``: the events of a time range, one desk or one call's story, from the history stream.

Registered on the group in cli.py. It only reads the stream ``<namespace>.history``
(the user tcx-history may; bridge.access), starting at a timestamp offset, never
at the stream's first message when --since is given (bridge.history).
"""

from __future__ import annotations

import sys

import click

from bridge.clikit import with_settings
from bridge.config import Settings

FORMATS = ("table", "json")


@click.command("history")
@click.option("--since", metavar="T", help="From this RFC 3339 time or day (UTC); default: the whole stream.")
@click.option("--until", metavar="T", help="Up to this RFC 3339 time or day (a day: its end).")
@click.option("--desk", help="Only this desk's events.")
@click.option("--call", "call_id", metavar="CALL_ID", help="One call's story (S, C, E, dial results).")
@click.option("--format", "form", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing new events as they come (like journalctl -f)."
)
@with_settings
def history_command(
    settings: Settings,
    since: str | None,
    until: str | None,
    desk: str | None,
    call_id: str | None,
    form: str,
    follow: bool,
) -> None:
    """Print the events of the history stream in order: a time range, a desk, or one call.

    --call without --since looks at the last 24 hours (give --since for an older
    call). JSON is one object a line: offset, routing_key, user_id, event. An event
    the broker does not vouch for (its key not the one it is published with, no
    user_id, or desk A's user naming desk B) shows as spoofed, its event null, and
    never under --desk, --call or a time range.

    \b
    Example:
        tcx-bridge history --since 2026-11-02T09:00:00Z --until 2026-11-02T10:00:00Z
        tcx-bridge history --call 0791234567-17 --format json
        tcx-bridge history --desk DESK-07 --follow
    """
    from datetime import timedelta

    from bridge.history import COLUMNS, Query, as_json, as_line, as_row, entries, nothing_found, parse_moment
    from bridge.text import printable
    from bridge.topology import history_queue
    from bridge.transport import Broker

    start = parse_moment(since, "--since") if since else None
    end = parse_moment(until, "--until") if until else None
    if end is not None and until is not None and len(until.strip()) == 10:
        end += timedelta(days=1, microseconds=-1)  # a day: up to its end
    query = Query(start, end, desk, call_id, settings.trust_user_id)
    with Broker(settings.amqp_url, ca_file=settings.ca_file) as broker:
        if broker.queue_info(history_queue(settings)) is None:
            raise click.ClickException(
                f"the history stream {history_queue(settings)!r} does not exist; "
                "run tcx-bridge topology declare as an admin first"
            )
        if form == "table":
            click.echo(as_line(COLUMNS))
        shown = 0
        try:
            for entry in entries(broker, history_queue(settings), query, follow=follow):
                shown += 1
                if form == "json":
                    sys.stdout.buffer.write(as_json(entry) + b"\n")
                else:
                    click.echo(as_line(tuple(printable(cell) for cell in as_row(entry))))
                if follow:
                    sys.stdout.flush()
        except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C on --follow; piped into head
            sys.stderr.close()  # nothing more to say, and no traceback about the closed pipe
            return
    if not shown:  # said on stderr: the output stays empty (JSON) or the header alone (table)
        click.echo(nothing_found(call_id, since is not None), err=True)
