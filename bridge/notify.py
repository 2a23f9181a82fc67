"""The registered executable: one 3CX Assistant launch -> one confirmed event.

Path of a launch (after the front, bridge.launcher, found no desk agent to
take it): parse argv, build and encode the event (bridge.launch_event, before
connecting); hand it to the running desk agent (bridge.handoff) when its data
dir or hand-off endpoint differs from the one the front tried, else publish it
with confirms; on failure retry within ``publish_budget`` seconds, then store
it in the outbox and still exit 0: the event is safe. After a successful
publish, replay a bounded batch of older outboxed events.

Exit status: 0 published or stored (also when a bad setting, a refused login or
an unknown vhost made it wait in the outbox: one line on stderr names the
problem), 2 the launch was not understood (it is still published to
``call.invalid.<desk>``, or stored), 1 the event could be neither published nor
stored (stderr: one ``LOST <event JSON>`` line). The outcome line of the log
also goes to stderr: always from a terminal, and for an event outboxed because
the broker was away (the gui-script has no stderr).

This module is imported once per call: it imports only what the hand-off
needs (no click, no pika: the transport only when the launch publishes itself;
tenacity only when a retry happens). Its log file and stderr
lines are set up by ``bridge.notify_log``, the hard deadline is ``bridge.watchdog``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from bridge import events, handoff, launcher
from bridge.config import Settings, load_settings
from bridge.envelope import OutgoingMessage
from bridge.errors import BrokerRefusedError, ConfigError, TcxBridgeError, TransportError
from bridge.launch_event import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    Given,
    build_event,
    log_problems,
    prepare,
    to_message,
    too_big,
)
from bridge.notify_log import configure_logging, log_lost
from bridge.text import printable
from bridge.watchdog import WATCHDOG_GRACE, Watchdog

if TYPE_CHECKING:
    from bridge.outbox import Outbox

logger = logging.getLogger("bridge.notify")
__all__ = [
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_OK",
    "build_event",
    "main",
    "prepare",
    "run",
    "to_message",
    "too_big",
]


class Delivered(NamedTuple):
    """What deliver did: published or outboxed, how many old events it replayed, and why it outboxed."""

    outcome: str
    replayed: int
    why: str = ""


def _keep_now(store: Callable[[], object]) -> None:
    store()


def deliver(
    message: OutgoingMessage,
    settings: Settings,
    on_safe: Callable[[], None] = lambda: None,
    keep: Callable[[Callable[[], object]], None] = _keep_now,
) -> Delivered:
    """Publish message (retrying within the budget) or outbox it.

    on_safe is called as soon as the event is confirmed; keep(store) stores it in
    the outbox (the watchdog's keep does so once, whoever of the two comes first).
    Raises OutboxError only when the event can be neither published nor stored.
    """
    deadline = time.monotonic() + settings.publish_budget
    outbox = LazyOutbox(settings)
    position = desk_position(settings)
    try:
        return Delivered(
            "published",
            _publish_and_replay(message, settings, outbox, settings.publish_budget, on_safe, position),
        )
    except BrokerRefusedError as error:  # retrying cannot fix it: keep the event and say what to fix
        logger.error("%s; the event is kept in the outbox until that is fixed", error)
        keep(lambda: outbox.put(message))
        return Delivered("outboxed", 0, str(error))
    except TransportError as error:
        logger.warning("publish failed, retrying: %s", error)
        why = str(error)
    remaining = deadline - time.monotonic()
    if remaining > 0.05:
        from bridge.retry import call_with_retries  # only on the slow path, as tenacity it brings

        def again(attempt: int) -> int:
            left = max(deadline - time.monotonic(), 0.1)
            start = position + attempt  # the next node first
            return _publish_and_replay(message, settings, outbox, left, on_safe, start)

        try:
            replayed = call_with_retries(
                again,
                when=lambda error: isinstance(error, TransportError),
                first_wait=0.1,
                max_wait=1.0,
                within=remaining,
            )
            return Delivered("published", replayed)
        except TransportError as error:
            logger.warning("publish failed within %.1fs: %s", settings.publish_budget, error)
            why = str(error)
    keep(lambda: outbox.put(message))
    return Delivered("outboxed", 0, why)


class LazyOutbox:
    """The outbox, imported only when an event is stored or there is something to replay.

    A launch that publishes while its outbox holds nothing (the common case) never
    imports the outbox's replay and quarantine code: a directory listing says so.
    """

    def __init__(self, settings: Settings) -> None:
        self.directory = settings.outbox_dir
        self._outbox: Outbox | None = None

    def get(self) -> Outbox:
        if self._outbox is None:
            from bridge.outbox import Outbox

            self._outbox = Outbox(self.directory)
        return self._outbox

    def put(self, message: OutgoingMessage) -> Path:
        return self.get().put(message)

    def may_hold_events(self) -> bool:
        """False when the outbox directory holds no file but its lock and sent journal (missing, or only
        those and its refused/ and corrupt/)."""
        try:
            with os.scandir(self.directory) as entries:
                return any(
                    entry.name not in NOT_EVENTS and entry.is_file(follow_symlinks=False) for entry in entries
                )
        except FileNotFoundError:
            return False
        except OSError:
            return True  # unreadable: the replay says why


NOT_EVENTS = frozenset({".lock", ".sent"})  # bridge.outbox.files' LOCK and SENT: not imported (a launch
# loads the outbox only when it needs it); tests/test_notify.py checks that they agree


def desk_position(settings: Settings) -> int:
    """Where this desk starts in the list of broker addresses, so that desks spread over the nodes."""
    return sum(settings.desk.encode())  # stable across processes (str hashes are not); no zlib import


def _publish_and_replay(
    message: OutgoingMessage,
    settings: Settings,
    outbox: LazyOutbox,
    timeout: float,
    on_safe: Callable[[], None],
    start: int = 0,
) -> int:
    from bridge.topology import publish_event, publish_events  # pika: not on the hand-off's path
    from bridge.transport import Broker

    connect_timeout = max(
        settings.publish_budget / (settings.broker_count + 1), 0.2
    )  # a dead node costs a fraction
    with Broker(
        settings.amqp_url,
        ca_file=settings.ca_file,
        timeout=timeout,
        start=start,
        connect_timeout=connect_timeout,
        sign=True,  # user_id: the broker vouches that this desk's user sent it
    ) as broker:
        publish_event(broker, settings, message)
        on_safe()
        if settings.replay_batch == 0 or not outbox.may_hold_events():
            return 0  # the common case: nothing to replay, and the outbox's code is never imported
        try:
            replay = outbox.get().replay(
                publish_batch=functools.partial(publish_events, broker, settings), limit=settings.replay_batch
            )
        except TcxBridgeError as error:  # our event is out; the backlog waits for the next try
            logger.warning("outbox replay stopped: %s", error)
            return 0
        if replay.refused:  # each was logged as an error, with its reason
            logger.warning("%d outboxed event(s) refused for good, set aside", replay.refused)
        return replay.published


USAGE = """usage: tcx-bridge-notify /N:S|C|E [/C:CallerId] [/T:I|O] /I:CallId

The executable 3CX Assistant launches once per call event (register
tcx-bridge-notifyw.exe as its "Call CRM Executable"). It publishes the event to
RabbitMQ, or keeps it in the local outbox until the broker is back.
  /N:S /C:0791234567 /T:I /I:42   an inbound call rings     /N:C ... answered
  /N:E /T:I /I:42                 it ended                  /T:O outbound
Configuration: tcx-bridge config; a desk's health: tcx-bridge doctor.
"""
HELP = frozenset({"--help", "-h", "/?", "-?", "/h", "/help"})


def run(argv: Sequence[str], tried: str | None = None, given: Given | None = None) -> int:
    """Handle one launch; return the exit status (tried: the agent directory the front tried already;
    given: the event id and time it gave the agent there)."""
    if len(argv) == 1 and argv[0].lower() in HELP:  # a person, never 3CX: nothing to publish
        if sys.stdout is not None:
            sys.stdout.write(USAGE)
        return EXIT_OK
    started = time.perf_counter()
    try:
        settings = load_settings(sections=()).settings
    except ConfigError as error:
        return _rescue_with_defaults(argv, error)
    configure_logging(settings)
    prepared = prepare(argv, settings, given)
    event, message, exit_code = prepared.event, prepared.message, prepared.exit_code
    log_problems(argv, prepared)
    if prepared.oversize:
        log_lost(message, prepared.oversize)
        return EXIT_FAILED
    mine = os.path.normpath(handoff.directory_of(settings.data_dir))
    endpoint = handoff.endpoint_of(settings.handoff_endpoint)
    front = handoff.endpoint_of(launcher.endpoint_of(os.environ))  # as the front read it
    if tried is None or mine != os.path.normpath(tried) or endpoint != front:  # the front did not try it
        why_not = handoff.hand_over(message, settings, endpoint)
        if why_not is None:  # the desk agent has it durably and publishes it on its open connection
            _log_outcome(Delivered("handed", 0), event, message, settings, started)
            return exit_code
        if not why_not.startswith(("no agent", "off")):
            logger.warning("desk fast path: %s; publishing event_id=%s itself", why_not, event.event_id)
    deadline = settings.publish_budget + WATCHDOG_GRACE
    try:
        with Watchdog(deadline, message, settings, exit_code, lost_code=EXIT_FAILED) as watchdog:
            try:
                delivered = deliver(message, settings, watchdog.mark_safe, watchdog.keep)
            except Exception:  # a bug: keep the call before the traceback, unless it is safe already
                if not watchdog.safe:
                    watchdog.keep(lambda: LazyOutbox(settings).put(message))
                    logger.exception(
                        "kept event_id=%s in the outbox after an unexpected error", event.event_id
                    )
                raise
    except TcxBridgeError as error:
        log_lost(message, error)
        return EXIT_FAILED
    _log_outcome(delivered, event, message, settings, started)
    return exit_code


def _log_outcome(
    delivered: Delivered,
    event: events.CallEvent,
    message: OutgoingMessage,
    settings: Settings,
    started: float,
) -> None:
    """The launch's one line: published or outboxed (and why), the ids, how long it took."""
    line = "%s %s event_id=%s call_id=%s ms=%.1f replayed=%d"
    waits = " (%s); it waits in %s for the next replay"
    facts = (
        delivered.outcome,
        message.routing_key,
        event.event_id,
        printable(str(event.call_id), 200),
        (time.perf_counter() - started) * 1000,
        delivered.replayed,
    )
    if delivered.outcome == "outboxed":
        why = printable(delivered.why, 500)
        logger.warning(
            line + waits,  # noqa: G003  # two constant parts of one %-style format
            *facts,
            why,
            settings.outbox_dir,
            extra={"outcome": True},
        )
    else:
        logger.info(line, *facts, extra={"outcome": True})


def _rescue_with_defaults(argv: Sequence[str], error: ConfigError) -> int:
    """Bad configuration: keep the event in the outbox (bad values taken as defaults) so it is not lost.

    The event is safe, so the exit is 0 (2 for a launch not understood); stderr names the setting to fix.
    """
    try:
        # the bad values as defaults
        settings: Settings | None = load_settings(lenient=True, sections=()).settings
    except TcxBridgeError:
        settings = None
    configure_logging(settings)
    logger.error("configuration error: %s; the event is kept in the outbox until that is fixed", error)
    if settings is not None:
        event, _ = build_event(argv, settings)
        message = to_message(event)
        oversize = too_big(message)
        if oversize:
            log_lost(message, oversize)
            return EXIT_FAILED
        try:
            path = LazyOutbox(settings).put(message)
        except TcxBridgeError as outbox_error:
            log_lost(message, outbox_error)
        else:
            logger.info("event_id=%s kept in %s until the configuration is fixed", event.event_id, path)
            return EXIT_INVALID if event.kind == "invalid" else EXIT_OK
    return EXIT_FAILED


def main(tried: str | None = None, given: tuple[str, int] | None = None) -> None:
    """Run one launch (``tcx-bridge-notify`` starts in bridge.launcher, which calls this when no agent
    took the launch from the data dir ``tried``, with the event id and start time it gave it)."""
    sys.exit(run(sys.argv[1:], tried, None if given is None else Given(*given)))


if __name__ == "__main__":
    main()
