"""``tcx-bridge callbacks``: list, assign, dial and close callback tasks (the callbacks consumer's store).

Changes are made in the store, with their ``callback.*`` events queued in the same
transaction; the running callbacks consumer publishes them (as ``tcx-callbacks``).
``callbacks dial`` publishes its dial request with this command's own broker user
(give it the ``tcx-dialer`` user's amqp_url).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click

from bridge.clikit import with_settings
from bridge.config import Settings
from bridge.events import MAX_REASON, parse_time

COLUMNS = ("id", "state", "number", "missed", "first_missed", "ago", "due", "desk", "attempts", "dial")


@contextmanager
def _store(settings: Settings) -> Iterator[Any]:
    from consumers.store.core import open_store

    store = open_store(settings, "callbacks")
    try:
        yield store
    finally:
        store.close()


def _ago(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}" if minutes >= 60 else f"{minutes}m"


def describe(row: dict[str, Any], settings: Settings, now: datetime) -> dict[str, Any]:
    """A task as ``callbacks list`` shows it (times local, its state worked out)."""
    from consumers.callbacks.assign import zone
    from consumers.callbacks.tasks import state_of
    from consumers.numbers import display

    local = zone(settings)
    first, due = parse_time(row["first_missed_at"]), parse_time(row["due_at"])
    return {
        "id": row["id"],
        "state": state_of(row, now),
        "number": display(row["number_e164"], settings.region),
        "number_e164": row["number_e164"],
        "missed": row["missed_count"],
        "missed_desk": row["missed_desk"],
        "first_missed": first.astimezone(local).strftime("%Y-%m-%d %H:%M"),
        "first_missed_at": row["first_missed_at"],
        "last_missed_at": row["last_missed_at"],
        "ago": _ago((now - first).total_seconds()),
        "due": due.astimezone(local).strftime("%Y-%m-%d %H:%M"),
        "due_at": row["due_at"],
        "desk": row["desk"],
        "attempts": row["attempts"],
        "dial": row["dial_state"],
        "reached_by": row["reached_by"],
        "closed_at": row["closed_at"],
        "reason": row["reason"],
    }


@click.group("callbacks")
def callbacks() -> None:
    """Callback tasks for missed callers (the callbacks consumer's store; docs/callbacks.md)."""


@callbacks.command("list")
@click.option("--open", "which", flag_value="open", default=True, help="Open tasks (the default).")
@click.option("--due", "which", flag_value="due", help="Open tasks that are due or overdue.")
@click.option("--all", "which", flag_value="all", help="Every task, closed ones too.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@with_settings
def list_command(settings: Settings, which: str, fmt: str) -> None:
    """List callback tasks, oldest first.

    \b
    Example:
        tcx-bridge callbacks list --due
        tcx-bridge callbacks list --all --format json
    """
    from consumers.analytics.report import render_table
    from consumers.callbacks.tasks import listing

    now = datetime.now(UTC)
    with _store(settings) as store:
        rows = [describe(row, settings, now) for row in listing(store, which, now)]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(render_table(rows, COLUMNS))


@callbacks.command("assign")
@click.argument("task_id", type=click.IntRange(min=1))
@click.option("--desk", required=True, help="The desk that calls back.")
@with_settings
def assign_command(settings: Settings, task_id: int, desk: str) -> None:
    """Give a callback task to a desk (callback.assigned).

    \b
    Example:
        tcx-bridge callbacks assign 12 --desk DESK-07
    """
    from consumers.callbacks import tasks

    with _store(settings) as store, store.transaction():
        tasks.lock(store)
        row = tasks.assign(store, tasks.task(store, task_id), desk, "hand")
    click.echo(f"callback task {row['id']} assigned to desk {row['desk']}")


@callbacks.command("dial")
@click.argument("task_id", type=click.IntRange(min=1))
@click.option("--desk", help="Dial from this desk (default: the task's desk); it is assigned the task.")
@with_settings
def dial_command(settings: Settings, task_id: int, desk: str | None) -> None:
    """Call a missed caller back: queue a dial request for the task's desk, tagged with the task.

    The desk's dial result and confirmation land on the task; the task closes by
    itself once the caller is connected.

    \b
    Example:
        tcx-bridge callbacks dial 12 --desk DESK-07
    """
    from consumers.callbacks.dial import dial_task

    with _store(settings) as store:
        row, request = dial_task(settings, store, task_id, desk)
    click.echo(f"callback task {row['id']}: dial {request.request_id} queued for desk {row['desk']}")


@callbacks.command("close")
@click.argument("task_id", type=click.IntRange(min=1))
@click.option("--reason", required=True, help="Why it is closed (kept with the task and in callback.closed).")
@with_settings
def close_command(settings: Settings, task_id: int, reason: str) -> None:
    """Close a callback task by hand (outcome closed, with the reason).

    \b
    Example:
        tcx-bridge callbacks close 12 --reason "called back from a mobile"
    """
    from consumers.callbacks import tasks

    if not reason.strip() or len(reason) > MAX_REASON:
        raise click.BadParameter(
            f"{reason[:40]!r} must be 1 to {MAX_REASON} characters", param_hint="--reason"
        )
    with _store(settings) as store, store.transaction():
        tasks.lock(store)
        tasks.close(store, tasks.task(store, task_id), "closed", reason=reason.strip())
    click.echo(f"callback task {task_id} closed")
