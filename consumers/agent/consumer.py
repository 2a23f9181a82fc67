"""The desk agent: dials on the local 3CX Assistant, shows screen pops, replays the outbox.

One per desk, long-running: ``tcx-bridge agent``. Its queue ``tcx.desk.<desk>``
is bound on ``tcx.commands`` to ``desk.<desk>.*`` and, with an extension
configured, to ``ext.<extension>.dial`` and ``ext.<extension>.popup``.

At most once: a request_id is recorded durably (status ``dialing``) before the
Assistant runs, so a redelivery (after a crash, a lost ack, or a duplicate
publish) never dials again. A request found still ``dialing`` means the agent
died while dialing; it is reported ``failed`` and not retried, since the call
may have been placed.

The parts: the dial records and their confirmation (dials), a request that does
not decode (unreadable), the Assistant itself (assistant), screen pops (popup),
the desk's dial policy (dial_policy).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge import events
from bridge.config import Settings
from bridge.dial import clean_number
from bridge.envelope import build_outgoing
from bridge.errors import DialError, DialExpiredError, HandlerError, TcxBridgeError
from bridge.handoff import endpoint_of, supported
from bridge.outbox import Outbox
from bridge.topology import (
    Binding,
    declare_commands,
    declare_events,
    desk_bindings,
    desk_queue_name,
    publish_events,
)
from bridge.transport import Broker, Delivery, OutgoingMessage
from consumers.agent.assistant import run_assistant
from consumers.agent.dial_policy import DialPolicy
from consumers.agent.dials import Dials, request_of
from consumers.agent.handoff import HandoffServer
from consumers.agent.popup import show
from consumers.agent.settings import AGENT
from consumers.agent.unreadable import Unreadable
from consumers.analytics.calls import spoofed
from consumers.privacy import command as forget_command
from consumers.privacy.files import sweep_logs
from consumers.privacy.settings import options_of
from consumers.privacy.stores import erase as erase_rows
from consumers.privacy.sweep import sweep_dials
from consumers.runtime.consumer import Consumer, Context
from consumers.store.core import SqliteStore

logger = logging.getLogger(__name__)


class DeskAgent(Consumer):
    """Takes dial requests and screen pops addressed to this desk."""

    signs = True  # dial results and replayed events carry user_id: the broker vouches for this desk

    def __init__(self, settings: Settings) -> None:
        self.name = self.name_for(settings)
        self.settings = settings
        # not `database`: each dial commits on its own, before the Assistant runs (no batching)
        self.dials = Dials(Path(settings.data_dir) / "agent.sqlite3")
        self._next_replay = 0.0
        self.policy = DialPolicy.of(settings)
        self.options = AGENT.of(settings)
        self._handed = threading.Event()  # the fast path stored an event: replay at the next tick
        self._broker: Broker | None = None  # the runner's connection, to wake it from the hand-off thread
        self.handoff: HandoffServer | None = None

    @classmethod
    def name_for(cls, settings: Settings) -> str:
        return desk_queue_name(settings.desk)

    @classmethod
    def bindings(cls, settings: Settings) -> Sequence[Binding]:
        return desk_bindings(settings)

    @classmethod
    def declare(cls, broker: Broker, settings: Settings) -> None:
        declare_events(broker, settings)  # results go there
        declare_commands(broker, settings)

    def decode(self, body: bytes, routing_key: str) -> Any:
        if routing_key.endswith(".dial"):
            try:
                return events.DIAL_REQUEST_DECODER.decode(body)
            except Exception as error:  # whatever is wrong (even a bug), a readable request_id gets an answer
                unreadable = Unreadable.of(body, str(error) or type(error).__name__)
                if unreadable is None:
                    raise  # no request_id to answer to: dead-lettered
                return unreadable
        if routing_key.endswith(".popup"):
            return events.SCREEN_POP_DECODER.decode(body)
        if routing_key.startswith("call."):
            return events.CALL_EVENT_DECODER.decode(body)
        raise HandlerError(f"routing key {routing_key!r} is neither a dial nor a popup")

    def handle(self, message: Any, context: Context) -> str:
        if isinstance(message, events.DialRequest):
            return self.dial(message, context)
        if isinstance(message, Unreadable):
            return self.reject_unreadable(message, context)
        if isinstance(message, events.CallEvent):
            return self.confirm(message, context)
        return self.popup(message)

    def forget(self, settings: Settings, request: Any, user_id: str | None) -> dict[str, int]:
        """A privacy.forget: the desk's dial records, outbox and logs (the agent has no store)."""
        dials = SqliteStore(self.dials.db, "agent.sqlite3", "agent")
        erase_dials = lambda forms: sum(erase_rows(dials, forms).values())  # noqa: E731  # one line
        return forget_command.act(settings, request, user_id, None, dials=erase_dials)

    def sweep(self, settings: Settings) -> dict[str, int]:
        """Retention on the desk: dial records (retention_dials) and rotated logs (retention_logs)."""
        now = datetime.now(UTC)
        found = {
            "dials": sweep_dials(self.dials.db, options_of(settings), now),
            "logs": sweep_logs(settings, now),
        }
        found = {name: count for name, count in found.items() if count}
        if found:
            logger.info("agent retention deleted %s", found)
        return found

    def refuse(self, delivery: Delivery, context: Context, reason: str) -> None:
        """A dial request the broker vouches for no one for: its CRM gets ``rejected`` with the reason."""
        unreadable = Unreadable.of(delivery.body, reason) if delivery.routing_key.endswith(".dial") else None
        if unreadable is None:
            return
        request = events.DialRequest(request_id=unreadable.request_id, number=unreadable.number)
        if not self.dials.known(request.request_id):
            self.dials.record(request, request.number, "rejected", reason)
            self._report(context.publish, request, request.number, "rejected", reason)

    def reject_unreadable(self, unreadable: Unreadable, context: Context) -> str:
        """A request that does not decode but names its request_id: the CRM gets ``rejected``."""
        request = events.DialRequest(request_id=unreadable.request_id, number=unreadable.number)
        if self.dials.known(request.request_id):
            return "duplicate"
        reason = f"the request cannot be read: {unreadable.reason}"
        self.dials.record(request, request.number, "rejected", reason)
        self._report(context.publish, request, request.number, "rejected", reason)
        return "rejected"

    # dialing ---------------------------------------------------------------
    def dial(self, request: events.DialRequest, context: Context) -> str:
        row = self.dials.find(request.request_id)
        if row is not None:
            if row["status"] == "dialing":  # we died between recording and finishing
                stale = (
                    "the desk agent stopped while dialing; not dialed again: the call may have been placed"
                )
                self.dials.finish(request.request_id, "failed", stale)
                self._report(context.publish, request, row["number"], "failed", stale)
            return "duplicate"
        try:
            number = self._check(request)
            self._allowed(number)
        except DialError as error:
            status: events.DialStatus = "expired" if isinstance(error, DialExpiredError) else "rejected"
            self.dials.record(request, request.number, status, str(error))
            self._report(context.publish, request, request.number, status, str(error))
            return status
        self.dials.record(request, number, "dialing", None)  # durable before anything runs
        status, reason = run_assistant(self.settings, number)
        self.dials.finish(request.request_id, status, reason)
        confirm_within = None
        if status == "dialed" and self.options.dial_confirm_timeout > 0:
            confirm_within = self.options.dial_confirm_timeout
            self.dials.await_confirmation(request.request_id, confirm_within)
        self._report(context.publish, request, number, status, reason, confirm_within=confirm_within)
        return status

    # confirmation from the Assistant's own events --------------------------
    def confirm(self, event: events.CallEvent, context: Context) -> str:
        """An outbound call event of this desk confirms the dial it belongs to (Dials.match)."""
        problem = spoofed(context.settings, context.delivery, event)
        if problem is not None:
            raise HandlerError(problem)  # another desk's user cannot confirm (or hide) this desk's dials
        if event.direction != "outbound" or event.call_id is None:
            return "ignored"
        match = self.dials.match(event)
        if match is None:
            return "no-dial-waiting"
        self.dials.confirm(match["request_id"], event.call_id)
        self._report(
            context.publish, request_of(match), match["number"], "confirmed", None, call_id=event.call_id
        )
        return "confirmed"

    def _unconfirmed(self, broker: Broker) -> None:
        """Dials whose confirmation did not come in time: dial.unconfirmed."""
        for row in self.dials.overdue():
            reason = (
                f"the 3CX Assistant reported no outbound call within {self.options.dial_confirm_timeout:g}s "
                "(is it running and logged in?)"
            )
            self.dials.finish(row["request_id"], "unconfirmed", reason)
            self._report(
                functools.partial(_publish_on, broker), request_of(row), row["number"], "unconfirmed", reason
            )

    @staticmethod
    def _check(request: events.DialRequest) -> str:
        """The number to dial; DialError if the request expired or the number is not acceptable."""
        if request.expires_at is not None and events.parse_time(request.expires_at) <= datetime.now(UTC):
            raise DialExpiredError(f"the request expired at {request.expires_at}")
        return clean_number(request.number)

    def _allowed(self, number: str) -> None:
        """DialError unless the desk's dial policy lets it dial number now (premium rate, prefixes, rate)."""
        self.policy.check(number)
        since = events.format_time(datetime.now(UTC) - timedelta(seconds=self.policy.window))
        self.policy.check_rate(self.dials.recent(since))

    def _report(
        self,
        publish: Callable[[str, OutgoingMessage], bool],
        request: events.DialRequest,
        number: str,
        status: events.DialStatus,
        reason: str | None,
        *,
        call_id: str | None = None,
        confirm_within: float | None = None,
    ) -> None:
        """Publish the request's result (dial.<status>.<desk>) on the events exchange."""
        self._publish_result(
            publish,
            events.DialResult(
                request_id=request.request_id,
                desk=self.settings.desk,
                number=number,
                status=status,
                reason=reason[:4000] if reason else None,
                occurred_at=events.utc_now(),
                extension=self.settings.extension,
                requested_by=request.requested_by,
                call_id=call_id,
                confirm_within=confirm_within,
            ),
        )

    def _publish_result(
        self, publish: Callable[[str, OutgoingMessage], bool], result: events.DialResult
    ) -> None:
        self.metrics.dial_result(result.status)
        if result.reason:
            logger.warning("dial %s %s: %s", result.request_id, result.status, result.reason)
        else:
            logger.info("dial %s %s %s", result.request_id, result.status, result.call_id or "")
        publish(
            self.settings.exchange,
            build_outgoing(
                result,
                routing_key=result.routing_key,
                message_id=events.new_event_id(),
                type="dial.result",
                app_id="tcx-bridge-agent",
            ),
        )

    # screen pops -----------------------------------------------------------
    def popup(self, pop: events.ScreenPop) -> str:
        return show(pop, self.settings)

    # the desk fast path (bridge.handoff) ------------------------------------
    def start_handoff(self) -> None:
        """Take launches' events over the private endpoint; the launches take their own path if it cannot."""
        if self.settings.handoff_timeout <= 0:
            return
        endpoint = endpoint_of(self.settings.handoff_endpoint)  # auto: unix on Linux, else tcp
        if endpoint == "unix" and not supported():
            logger.warning(
                "desk fast path off: handoff_endpoint = unix, but this platform has no Unix socket with a "
                "peer-uid check; set it to auto or tcp"
            )
            return
        server = HandoffServer(self.settings, self._stored, endpoint)
        try:
            server.start()
        except OSError as error:
            logger.warning("desk fast path off (launches connect to the broker themselves): %s", error)
            return
        self.handoff = server

    def _stored(self) -> None:
        """A launch's event is in the outbox (hand-off thread): publish it at the next tick, now."""
        self._handed.set()
        broker = self._broker
        if broker is not None:
            broker.wake()

    # the notify outbox -----------------------------------------------------
    def tick(self, broker: Broker, settings: Settings) -> None:
        self._broker = broker
        handed = self._handed.is_set()
        now = time.monotonic()
        if handed or now >= self._next_replay:
            self._handed.clear()
            self._next_replay = now + AGENT.of(settings).replay_interval
            self._replay(broker, settings, handed)
        self._unconfirmed(broker)

    def _replay(self, broker: Broker, settings: Settings, handed: bool) -> None:
        """Publish the outbox (handed events and launches' leftovers) on the agent's connection."""
        outbox = Outbox(settings.outbox_dir)
        try:
            replay = outbox.replay(publish_batch=functools.partial(publish_events, broker, settings))
        except TcxBridgeError as error:
            logger.warning("outbox replay stopped: %s", error)
        else:
            if replay.locked_out and handed:  # a launch or spool flush replays: look again next tick
                self._handed.set()
            if replay.published or replay.refused:
                logger.info(
                    "replayed %d outboxed event(s); %d refused for good (set aside); %d left",
                    replay.published,
                    replay.refused,
                    replay.remaining,
                )
        waiting = outbox.paths()  # sampled after the replay: what still waits
        try:
            oldest = time.time() - waiting[0].stat().st_mtime if waiting else 0.0
        except OSError:  # replayed by a launch meanwhile
            oldest = 0.0
        self.metrics.outbox(len(waiting), oldest, len(outbox.refused()))

    def close(self) -> None:
        if self.handoff is not None:
            self.handoff.close()
        self.dials.close()


def _publish_on(broker: Broker, exchange: str, message: OutgoingMessage) -> bool:
    broker.publish(exchange, message)  # the events exchange has an alternate: never returned
    return True
