"""The callbacks consumer: a task for every missed external caller, closed when they are reached.

``tcx-bridge consume callbacks``; queue ``tcx.callbacks`` bound to the call events
(``call.started.#``, ``call.connected.#``, ``call.ended.#``), the dial results
(``dial.#``) and ``privacy.forget`` on the commands exchange (the runner erases the
number in its store). It keeps call records like the analytics consumer (its store:
``<data_dir>/callbacks.sqlite3``, or ``callbacks_calls`` and ``callbacks`` in PostgreSQL):

    inbound S then E, no C, from an external number   open a task (or add to the caller's open one);
                                                      anonymous, internal and callback_ignore: none
    inbound C from the number                         the task closes ``reached``
    outbound C to the number (any desk; by E.164)     the task closes ``reached``
    outbound E unconnected from the desk the task's dial is out on   one attempt; callback_max_attempts:
                                                      ``unreached`` (another desk's call is none)
    dial.<status> for a task's request (callback-<id>-…)   the task's dial_state follows

Between deliveries (tick) it publishes the queued ``callback.*`` events in order
(consumers.callbacks.tasks; as user ``tcx-callbacks``), sets ``tcx_callbacks_open``,
and, with ``callback_assign = "auto"``, gives open tasks to idle desks (consumers.callbacks.assign).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bridge import events
from bridge.access import desk_of_user
from bridge.config import Settings
from bridge.envelope import build_outgoing
from bridge.errors import HandlerError
from bridge.topology import Binding
from bridge.transport import Broker, Delivery
from consumers.analytics.calls import CallConsumer, other_party
from consumers.callbacks import assign, tasks
from consumers.callbacks.hours import due_at
from consumers.callbacks.settings import CallbackOptions, options_of
from consumers.numbers import normalise
from consumers.runtime.consumer import Context
from consumers.store.core import open_store

logger = logging.getLogger(__name__)

OUTBOX_BATCH = 200
HOUSEKEEPING = 2.0  # seconds between the open-task gauge and auto-assignment rounds


class Callbacks(CallConsumer):
    """Callback tasks for missed callers: opened on a missed call, closed when the caller is reached."""

    name = "callbacks"

    def __init__(self, settings: Settings, options: CallbackOptions | None = None) -> None:
        super().__init__(settings)
        self.options = options or options_of(settings)
        self.database = open_store(settings, "callbacks", wait=True)
        self._next_housekeeping = 0.0
        self._pending = True  # the outbox may hold events from before a restart, or from a command

    @classmethod
    def bindings(cls, settings: Settings) -> Sequence[Binding]:
        return [*super().bindings(settings), Binding(settings.exchange, "dial.#")]  # and privacy.forget

    def decode(self, body: bytes, routing_key: str) -> Any:
        return events.EVENT_DECODER.decode(body)

    def prepare(self, deliveries: Sequence[Delivery]) -> None:
        super().prepare(deliveries)  # PostgreSQL: the call keys locked first, then the tasks
        tasks.lock(self.store)

    def handle(self, message: Any, context: Context) -> str:
        if isinstance(message, events.DialResult):
            problem = result_spoofed(context, message)
            if problem is not None:
                raise HandlerError(problem)
            if tasks.task_of_request(message.request_id) is None:
                return "ignored"
            if not self.store.first_time(f"dial/{message.request_id}/{message.status}"):
                return "duplicate"
            self._pending = True
            return tasks.dial_result(self.store, message)
        return super().handle(message, context)

    def forget(self, settings: Settings, request: Any, user_id: str | None) -> dict[str, int]:
        """Close the caller's open task quietly (no event: it would carry the number) and drop their
        unpublished events; then the default erases the number in every text column, tasks included."""
        e164 = normalise(request.number, settings.region).e164
        if e164 is not None:
            store = self.store
            text = "CAST(body AS TEXT)" if store.dialect == "sqlite" else "convert_from(body, 'UTF8')"
            with store.transaction():
                tasks.lock(store)
                store.execute(
                    "UPDATE callbacks SET status = 'closed', outcome = 'closed', reason = 'forgotten', "
                    "closed_at = ? WHERE number_e164 = ? AND status = 'open'",
                    (events.utc_now(), e164),
                )
                store.execute(f"DELETE FROM callback_outbox WHERE {text} LIKE ?", (f"%{e164}%",))
        return super().forget(settings, request, user_id)

    def _e164(self, number: str | None) -> str | None:
        """The E.164 form of an external number that may have a task (None: anonymous, internal, ignored)."""
        read = normalise(number, self.settings.region)
        if read.kind != "external" or read.e164 is None:
            return None
        if any(read.e164.startswith(prefix) for prefix in self.options.callback_ignore):
            return None
        return read.e164

    def on_record(self, event: events.CallEvent, record: dict[str, Any], context: Context) -> str:
        e164 = self._e164(other_party(record))
        if e164 is None:
            return "no task"
        answered = record["connected_at"] is not None
        if answered and event.kind in ("connected", "started"):  # started: C came first, the number now
            closed = tasks.reached(self.store, e164, record["desk"], record["connected_at"])
            self._pending |= closed is not None
            return "reached" if closed is not None else "answered"
        if record["direction"] == "outbound":
            if event.kind == "ended" and not answered:
                row = tasks.unanswered(self.store, e164, record["desk"], self.options.callback_max_attempts)
                self._pending |= row is not None
                return "no task" if row is None else ("unreached" if row["status"] == "closed" else "attempt")
            return "recorded"
        if answered or record["started_at"] is None or record["ended_at"] is None:
            return "recorded"
        moment = events.parse_time(record["started_at"])
        due = due_at(
            moment, self.options.callback_sla, self.options.business_hours, assign.zone(self.settings)
        )
        row, opened = tasks.missed(
            self.store,
            number=str(other_party(record)),
            e164=e164,
            desk=record["desk"],
            missed_at=record["started_at"],
            due_at=due,
        )
        self._pending = True
        if opened:  # the caller may have got through already (events of other launches arrive in any order)
            found = self._connected_since(e164, record["started_at"])
            if found is not None:
                tasks.close(self.store, row, "reached", desk=found["desk"], at=found["connected_at"])
                return f"task {row['id']} opened, reached already"
        return f"task {row['id']} opened" if opened else f"task {row['id']} missed again"

    def _connected_since(self, e164: str, moment: str) -> dict[str, Any] | None:
        """The first call with e164 connected after moment (a wire time) that this consumer knows of."""
        rows = self.store.execute(
            f"SELECT * FROM {self.store.calls_table} WHERE connected_at > ? ORDER BY connected_at", (moment,)
        )
        return next((dict(row) for row in rows if self._e164(other_party(row)) == e164), None)

    def tick(self, broker: Broker, settings: Settings) -> None:
        now = time.monotonic()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING
            self._housekeeping()
        if self._pending:
            self._pending = self.publish_outbox(broker, settings)

    def _housekeeping(self) -> None:
        store = self.store
        if self.options.callback_assign == "auto":
            with store.transaction():
                given = assign.auto_assign(store, self.settings, datetime.now(UTC))
            self._pending |= bool(given)
        count = store.execute("SELECT count(*) AS n FROM callbacks WHERE status = 'open'").fetchone()["n"]
        self.metrics.callbacks_open(int(count))
        self._pending = True  # a command (callbacks assign, dial, close) may have queued events

    def publish_outbox(self, broker: Broker, settings: Settings) -> bool:
        """Publish the queued callback events in order and delete them; True while more wait."""
        store = self.store
        rows = store.execute(
            f"SELECT id, routing_key, body FROM callback_outbox ORDER BY id LIMIT {OUTBOX_BATCH}"
        ).fetchall()
        for row in rows:
            body = bytes(row["body"])
            event = events.CALLBACK_DECODER.decode(body)
            message = build_outgoing(
                event,
                routing_key=row["routing_key"],
                message_id=event.event_id,
                type=row["routing_key"],
                app_id="tcx-bridge-callbacks",
            )
            broker.publish(settings.exchange, message)  # the events exchange has an alternate: never returned
            if isinstance(event, events.CallbackClosed):
                self.metrics.callback_closed(event.outcome, event.seconds)
            with store.transaction():
                store.execute("DELETE FROM callback_outbox WHERE id = ?", (row["id"],))
        return len(rows) == OUTBOX_BATCH


def result_spoofed(context: Context, result: events.DialResult) -> str | None:
    """Why a dial result cannot be from the desk it names (judged by user_id, as for call events)."""
    if not context.settings.trust_user_id:
        return None
    user = context.delivery.user_id
    if not user:
        return "spoofed: the dial result has no user_id, so the broker vouches for no sender"
    speaks_for = desk_of_user(user)
    if speaks_for in (None, result.desk):
        return None
    return f"spoofed: the dial result is for desk {result.desk!r} but user {user!r} published it"
