"""Dial a callback task: record the dial on the task, then queue the request through the dial path.

Used by ``tcx-bridge callbacks dial`` and the wallboard's Call back button. The
request goes to ``tcx.commands`` (``desk.<desk>.dial``) as any dial request, with
the publisher's own broker user (the dialer's: ``tcx-dialer`` may publish dial
requests; the callbacks consumer's user may not), and a request id tagged with
the task (``callback-<id>-<attempt>-<random>``): the desk's ``dial.<status>``
results land on the task (consumers.callbacks.consumer).
"""

from __future__ import annotations

from typing import Any

from bridge import events
from bridge.config import Settings
from bridge.dial import request_dial
from bridge.errors import ConfigError, DialError, TransportError
from bridge.transport import Broker
from consumers.callbacks import tasks
from consumers.store.core import Store

DIAL_TTL = 120.0  # seconds a callback's dial request stays useful


def dial_task(
    settings: Settings,
    store: Store,
    task_id: int,
    desk: str | None = None,
    *,
    broker: Broker | None = None,
    requested_by: str = "tcx-bridge callbacks",
) -> tuple[dict[str, Any], events.DialRequest]:
    """Dial task_id from desk (default: its assigned desk): the task as recorded, and the request sent.

    The dial is recorded (and a new desk assigned) in one transaction before the
    request is published, so its result always finds the task; a publish that
    fails marks the dial ``failed`` and raises.
    """
    with store.transaction():
        tasks.lock(store)
        row = tasks.task(store, task_id)
        if row["status"] != "open":
            raise ConfigError(f"callback task {task_id} is closed ({row['outcome']}); it cannot be dialed")
        if row["dial_state"] in tasks.IN_FLIGHT:
            raise ConfigError(
                f"callback task {task_id} is {row['dial_state']} from desk {row['dial_desk']!r} already; "
                "wait for its result"
            )
        desk = desk or row["desk"]
        if desk is None:
            raise ConfigError(f"callback task {task_id} has no desk yet; give --desk")
        row = tasks.assign(store, row, desk, "hand")
        request_id = tasks.request_id_for(row)
        tasks.dialing(store, row, request_id, desk)
    try:
        request = request_dial(
            settings,
            row["number_e164"],
            desk=desk,
            ttl=DIAL_TTL,
            requested_by=requested_by,
            broker=broker,
            request_id=request_id,
        )
    except (TransportError, DialError) as error:
        with store.transaction():
            store.execute(
                "UPDATE callbacks SET dial_state = 'failed' WHERE id = ? AND dial_request = ?",
                (task_id, request_id),
            )
        raise ConfigError(f"callback task {task_id}: the dial request was not sent: {error}") from None
    return tasks.task(store, task_id), request
