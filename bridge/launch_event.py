"""The event of one launch: argv -> CallEvent -> its AMQP message, with the problems to log.

What ``bridge.notify`` does before it sends anything, and what the desk agent
runs for a launch handed over to it (bridge.handoff), so both build the same
event from the same launch and settings. No I/O here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec

from bridge import events
from bridge.config import Settings
from bridge.envelope import OutgoingMessage, build_outgoing
from bridge.errors import LaunchError
from bridge.launch import SYNTAX, parse_launch, scan_options, syntax_arguments
from bridge.text import escape_undecodable, printable

logger = logging.getLogger("bridge.notify")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
MAX_REASON = 1000  # characters of an invalid launch's reason (the argv itself is kept whole)


class Given(NamedTuple):
    """What the front (bridge.launcher) fixed for a launch before handing it over: the event's id and time,
    so that the agent's event and the launch's own (when the agent did not answer) are the same event."""

    event_id: str
    started_ns: int  # time.time_ns()

    @property
    def occurred_at(self) -> str:
        return events.format_time(datetime.fromtimestamp(self.started_ns // 1000 / 1e6, UTC))


def build_event(
    argv: Sequence[str], settings: Settings, fixed: Given | None = None
) -> tuple[events.CallEvent, list[str]]:
    """The event for one launch, and the problems to log (invalid launches included).

    Bytes that are not UTF-8 are kept escaped (``\\xff``); when the event would be
    over the body size a consumer takes, the stray arguments (all but the last
    /N: /C: /T: /I:) are dropped from its argv. It may still be over (a huge /I:
    of an invalid launch): see :func:`too_big`.
    """
    given = tuple(escape_undecodable(item) for item in argv)
    problems = [
        f"argument {number} {printable(repr(item), 200)} holds bytes that are not UTF-8; kept escaped"
        for number, (raw, item) in enumerate(zip(argv, given, strict=True), 1)
        if raw != item
    ]
    common = {
        "event_id": fixed.event_id if fixed else events.new_event_id(),
        "desk": settings.desk,
        "extension": settings.extension,
        "occurred_at": fixed.occurred_at if fixed else events.utc_now(),
        "argv": given,
    }
    try:
        launch = parse_launch(given)
    except LaunchError as error:
        options = scan_options(given)  # keep what can be read of a bad launch
        event = events.CallEvent(
            kind="invalid",
            direction="unknown",
            call_id=options.get("I", "").strip() or None,
            caller_id=options.get("C"),
            reason=str(error)[:MAX_REASON],
            **common,  # type: ignore[arg-type]  # keys checked by msgspec
        )
        problems.insert(0, str(error))
    else:
        event = events.CallEvent(
            kind=launch.kind,
            direction=launch.direction,
            call_id=launch.call_id,
            caller_id=launch.caller_id,
            anonymous=launch.anonymous,
            **common,  # type: ignore[arg-type]  # keys checked by msgspec
        )
        problems += launch.warnings
    if len(events.ENCODER.encode(event)) > events.MAX_BODY:
        kept = syntax_arguments(given)
        if len(kept) < len(given):
            problems.append(
                f"dropped {len(given) - len(kept)} stray argument(s) of "
                f"{sum(map(len, given)) - sum(map(len, kept))} characters (beyond {SYNTAX}) "
                f"to keep the event within the {events.MAX_BODY} bytes a consumer takes"
            )
            event = msgspec.structs.replace(event, argv=kept)
    return event, problems


def too_big(message: OutgoingMessage) -> str | None:
    """Why a consumer would refuse this message for its size (it is lost, not kept), or None."""
    if len(message.body) <= events.MAX_BODY:
        return None
    return (
        f"the event has {len(message.body)} bytes, over the {events.MAX_BODY} a consumer takes, "
        "even without stray arguments"
    )


def to_message(event: events.CallEvent) -> OutgoingMessage:
    """The AMQP message of a call event."""
    return build_outgoing(
        event,
        routing_key=event.routing_key,
        message_id=event.event_id,
        type=f"call.{event.kind}",
        app_id="tcx-bridge-notify",
    )


class Prepared(NamedTuple):
    """A launch made ready to send: its event and message, the problems to log, its exit status."""

    event: events.CallEvent
    message: OutgoingMessage
    problems: list[str]
    exit_code: int
    oversize: str | None  # why no consumer would take it (it is lost), or None


def prepare(argv: Sequence[str], settings: Settings, fixed: Given | None = None) -> Prepared:
    """Everything of a launch but its sending (also what the desk agent runs for a handed launch)."""
    event, problems = build_event(argv, settings, fixed)
    message = to_message(event)
    exit_code = EXIT_INVALID if event.kind == "invalid" else EXIT_OK
    return Prepared(event, message, problems, exit_code, too_big(message))


def log_problems(argv: Sequence[str], prepared: Prepared, log: logging.Logger = logger) -> None:
    """One line per problem of the launch: an error for a launch not understood, else a warning."""
    level = logging.ERROR if prepared.event.kind == "invalid" else logging.WARNING
    for problem in prepared.problems:
        log.log(level, "launch %s: %s", printable(repr(list(argv)), 300), printable(problem, 1000))
