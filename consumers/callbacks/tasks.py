"""Callback tasks in the store (table ``callbacks``): open, add a missed call, assign, dial, close.

One open task per caller (E.164; a partial unique index holds it): a second missed
call adds to it (``missed_count``, ``last_missed_at``). Every change that others
should hear of queues its event in ``callback_outbox`` in the same transaction;
the callbacks consumer publishes them in order (consumers.callbacks.consumer), so an
event is never told of a change that was rolled back, whoever made the change
(the consumer, ``tcx-bridge callbacks``, the wallboard's Call back).

Task states: ``status`` open or closed; ``outcome`` reached, unreached or closed
(by hand); ``dial_state`` of its latest dial: dialing (requested), dialed,
confirmed, no answer, or the dial result that ended it (unconfirmed, rejected,
expired, failed). All functions run inside the caller's transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge import events
from bridge.errors import ConfigError
from bridge.events import format_time, parse_time
from consumers.store.core import Store

REQUEST_PREFIX = "callback-"  # a task's dial requests: callback-<task id>-<attempt>-<random>
IN_FLIGHT = ("dialing", "dialed", "confirmed")
UNDIALED = ("unconfirmed", "rejected", "expired", "failed")  # the dial never went out: no attempt


def lock(store: Store) -> None:
    """Hold the tasks until the transaction ends (PostgreSQL replicas and commands, one at a time)."""
    store.lock(["callbacks"])


def enqueue(
    store: Store, event: events.CallbackOpened | events.CallbackAssigned | events.CallbackClosed
) -> None:
    """Queue an event for the consumer to publish once this transaction commits."""
    store.execute(
        "INSERT INTO callback_outbox (routing_key, body) VALUES (?, ?)",
        (event.routing_key, events.ENCODER.encode(event)),
    )


def task(store: Store, task_id: int) -> dict[str, Any]:
    """The task with this id; ConfigError naming it when there is none."""
    row = store.execute("SELECT * FROM callbacks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise ConfigError(f"callback task {task_id} does not exist; see tcx-bridge callbacks list --all")
    return dict(row)


def open_task_of(store: Store, e164: str) -> dict[str, Any] | None:
    row = store.execute(
        "SELECT * FROM callbacks WHERE number_e164 = ? AND status = 'open'", (e164,)
    ).fetchone()
    return dict(row) if row is not None else None


def missed(
    store: Store, *, number: str, e164: str, desk: str, missed_at: str, due_at: datetime
) -> tuple[dict[str, Any], bool]:
    """A missed call from e164: its open task with the call added, or a new one; (task, opened)."""
    found = open_task_of(store, e164)
    if found is not None:
        last = max(found["last_missed_at"], missed_at, key=parse_time)
        first = min(found["first_missed_at"], missed_at, key=parse_time)
        store.execute(
            "UPDATE callbacks SET missed_count = missed_count + 1, last_missed_at = ?, first_missed_at = ?, "
            "missed_desk = ? WHERE id = ?",
            (last, first, desk, found["id"]),
        )
        return task(store, found["id"]), False
    created = store.execute(
        "INSERT INTO callbacks (number, number_e164, missed_desk, first_missed_at, last_missed_at, due_at) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (number, e164, desk, missed_at, missed_at, format_time(due_at)),
    ).fetchone()
    row = task(store, created["id"])
    enqueue(
        store,
        events.CallbackOpened(
            event_id=events.new_event_id(),
            task_id=row["id"],
            number=number,
            number_e164=e164,
            desk=desk,
            missed_at=missed_at,
            due_at=format_time(due_at),
            occurred_at=events.utc_now(),
        ),
    )
    return row, True


def close(
    store: Store,
    row: dict[str, Any],
    outcome: events.CallbackOutcome,
    *,
    desk: str | None = None,
    reason: str | None = None,
    at: str | None = None,
) -> dict[str, Any]:
    """Close an open task (reached at ``at`` by desk, unreached, or by hand with reason); the closed task."""
    if row["status"] != "open":
        raise ConfigError(f"callback task {row['id']} is already closed ({row['outcome']})")
    now = events.utc_now()
    reached_at = at if outcome == "reached" else None
    store.execute(
        "UPDATE callbacks SET status = 'closed', outcome = ?, reached_at = ?, reached_by = ?, closed_at = ?, "
        "reason = ? WHERE id = ?",
        (outcome, reached_at, desk if outcome == "reached" else None, at or now, reason, row["id"]),
    )
    closed = task(store, row["id"])
    seconds = None
    if reached_at is not None:
        seconds = round((parse_time(reached_at) - parse_time(row["first_missed_at"])).total_seconds(), 6)
    enqueue(
        store,
        events.CallbackClosed(
            event_id=events.new_event_id(),
            task_id=row["id"],
            number_e164=row["number_e164"],
            outcome=outcome,
            desk=desk,
            reason=reason,
            missed_count=closed["missed_count"],
            attempts=closed["attempts"],
            missed_at=row["first_missed_at"],
            seconds=seconds,
            occurred_at=now,
        ),
    )
    return closed


def reached(store: Store, e164: str, desk: str, at: str) -> dict[str, Any] | None:
    """The caller was answered or connected at ``at`` by desk: their open task closes (if missed before)."""
    found = open_task_of(store, e164)
    if found is None or parse_time(found["first_missed_at"]) >= parse_time(at):
        return None
    return close(store, found, "reached", desk=desk, at=at)


def unanswered(store: Store, e164: str, desk: str, max_attempts: int) -> dict[str, Any] | None:
    """An outbound call to e164 from desk ended unconnected while the task's dial was out there: one
    attempt more. At max_attempts the task closes ``unreached``. None when no dial of an open task was
    out on that desk (another desk's unanswered call to the number is no attempt of the task's dial).
    """
    found = open_task_of(store, e164)
    if found is None or found["dial_state"] not in IN_FLIGHT or found["dial_desk"] != desk:
        return None
    attempts = found["attempts"] + 1
    store.execute(
        "UPDATE callbacks SET attempts = ?, dial_state = 'no answer' WHERE id = ?", (attempts, found["id"])
    )
    row = task(store, found["id"])
    if attempts >= max_attempts:
        return close(store, row, "unreached", reason=f"{attempts} dials went out unanswered")
    return row


def assign(store: Store, row: dict[str, Any], desk: str, by: str) -> dict[str, Any]:
    """Give an open task to desk (``callback.assigned``); nothing when it has that desk already."""
    if row["status"] != "open":
        raise ConfigError(f"callback task {row['id']} is closed ({row['outcome']}); it cannot be assigned")
    problem = events.desk_problem(desk)
    if problem is not None:
        raise ConfigError(f"desk {desk!r} {problem}")
    if row["desk"] == desk:
        return row
    now = events.utc_now()
    store.execute(  # a dial that ended is forgotten: the task waits for its new desk's dial
        "UPDATE callbacks SET desk = ?, assigned_at = ?, dial_state = CASE WHEN dial_state IN "
        "('dialing', 'dialed', 'confirmed') THEN dial_state END WHERE id = ?",
        (desk, now, row["id"]),
    )
    enqueue(
        store,
        events.CallbackAssigned(
            event_id=events.new_event_id(),
            task_id=row["id"],
            number_e164=row["number_e164"],
            desk=desk,
            by="auto" if by == "auto" else "hand",
            occurred_at=now,
        ),
    )
    return task(store, row["id"])


def request_id_for(row: dict[str, Any]) -> str:
    """A new dial request id tagged with the task: ``callback-<id>-<attempt>-<random>``."""
    return f"{REQUEST_PREFIX}{row['id']}-{row['attempts'] + 1}-{events.new_event_id()[:8]}"


def task_of_request(request_id: str) -> int | None:
    """The task a dial request id belongs to, or None (not a callback's)."""
    if not request_id.startswith(REQUEST_PREFIX):
        return None
    number = request_id[len(REQUEST_PREFIX) :].split("-", 1)[0]
    return int(number) if number.isdigit() and int(number) > 0 else None


def dialing(store: Store, row: dict[str, Any], request_id: str, desk: str) -> None:
    """The task's dial request is on its way to desk."""
    store.execute(
        "UPDATE callbacks SET dial_request = ?, dial_state = 'dialing', dial_desk = ?, dial_call_id = NULL "
        "WHERE id = ?",
        (request_id, desk, row["id"]),
    )


def dial_result(store: Store, result: events.DialResult) -> str:
    """A dial result for a task's request: its dial_state follows (outcome for the log line)."""
    task_id = task_of_request(result.request_id)
    found = store.execute("SELECT * FROM callbacks WHERE id = ?", (task_id,)).fetchone()
    if found is None or found["dial_request"] != result.request_id or found["dial_desk"] != result.desk:
        return "ignored"
    if found["status"] != "open" or found["dial_state"] == "no answer":
        return "recorded"  # the call it made already ended (events of other publishers arrive in any order)
    store.execute(
        "UPDATE callbacks SET dial_state = ?, dial_call_id = coalesce(?, dial_call_id) WHERE id = ?",
        (result.status, result.call_id, found["id"]),
    )
    return f"dial {result.status}"


DUE_SOON = 300.0  # seconds before its due time an open task shows as due


def state_of(row: dict[str, Any], now: datetime) -> str:
    """open, due (within DUE_SOON), overdue; or the outcome of a closed task."""
    if row["status"] != "open":
        return str(row["outcome"])
    left = (parse_time(row["due_at"]) - now).total_seconds()
    return "overdue" if left <= 0 else "due" if left <= DUE_SOON else "open"


def listing(store: Store, which: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Tasks oldest first: ``open``, ``due`` (open, due soon or overdue) or ``all``."""
    now = now or datetime.now(UTC)
    if which == "all":
        rows = store.execute("SELECT * FROM callbacks ORDER BY first_missed_at, id")
    else:
        rows = store.execute("SELECT * FROM callbacks WHERE status = 'open' ORDER BY first_missed_at, id")
    found = [dict(row) for row in rows]
    if which == "due":
        found = [row for row in found if state_of(row, now) in ("due", "overdue")]
    return found
