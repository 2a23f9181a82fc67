"""Reading the history stream (``tcx.history``): offsets, its tail, and the events of a range or one call.

The broker copies every event into the stream (bridge.topology.declare_history); this
module only reads it. A reader starts at an offset RabbitMQ understands: ``first``,
``last``, ``next``, a number, or a moment (a timestamp offset: the broker seeks to
the first chunk written at or after it, so a range never scans the stream from its
start). ``tcx-bridge history`` (bridge.cli_history) prints what :func:`entries`
yields; the consumers' backfill (consumers.runtime.backfill) reads up to the
:func:`stream_tail` it found when it began.

A moment is compared with the stream's own clock (when the broker wrote the chunk),
whole seconds; a range is read from ``SLACK`` seconds before --since, and each
event is then kept by its ``occurred_at``: a desk's clock may differ a little, and
an outboxed event arrives after it occurred.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import msgspec

from bridge import events
from bridge.access import desk_of_user
from bridge.errors import ConfigError
from bridge.transport import Broker, Delivery

SLACK = timedelta(seconds=60)  # read from this long before --since
CALL_WINDOW = timedelta(days=1)  # history --call without --since looks at the last day
PAST_UNTIL = 300  # seconds (publish time) read past --until before the reader stops
IDLE = 2.0  # seconds without a message after which a reader (not --follow) is at the end
FOLLOW_LAST = 10  # --follow alone starts with the stream's last events, as journalctl -f does
KEYWORDS = ("first", "last", "next")

Offset = str | int | datetime


HistoryEvent = events.CallEvent | events.DialResult | events.CallbackEvent  # every event the stream holds
_DECODER = msgspec.json.Decoder(HistoryEvent)


class Entry(NamedTuple):
    """One message of the history: its offset, the delivery, and the event (None: not one we can read,
    or one the broker does not vouch for: problem says which)."""

    offset: int
    delivery: Delivery
    event: HistoryEvent | None
    problem: str | None = None


def parse_moment(text: str, option: str) -> datetime:
    """An RFC 3339 time (``2026-11-02T09:00:00Z``, or with an offset) or a day (its start, UTC)."""
    value = text.strip()
    try:
        if len(value) == 10:
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        moment = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{option}: {text!r} is not a time; give RFC 3339 (2026-11-02T09:00:00Z) or a day (2026-11-02)"
        ) from None
    if moment.tzinfo is None:
        raise ConfigError(f"{option}: {text!r} has no time zone; add Z or an offset like +01:00")
    return moment.astimezone(UTC)


def parse_offset(text: str, option: str = "--from") -> Offset:
    """``first``, ``last``, ``next``, an offset (a whole number) or an RFC 3339 time."""
    value = text.strip()
    if value in KEYWORDS:
        return value
    if value.isdigit():
        return int(value)
    try:
        return parse_moment(value, option)
    except ConfigError:
        raise ConfigError(
            f"{option}: {text!r} is not a stream offset; give first, last, next, a number or an RFC 3339 "
            "time (2026-11-02T09:00:00Z)"
        ) from None


def stream_argument(offset: Offset) -> str | int | datetime:
    """The x-stream-offset argument: a moment in whole seconds (AMQP timestamps have no fraction)."""
    if isinstance(offset, datetime):
        return offset.astimezone(UTC).replace(microsecond=0)
    return offset


def offset_of(delivery: Delivery) -> int:
    """A stream delivery's offset (the broker sets it on every message it delivers from a stream)."""
    offset = delivery.headers.get("x-stream-offset")
    return int(offset) if isinstance(offset, int) else -1  # pika's long, a subclass


def stream_tail(broker: Broker, queue: str) -> int | None:
    """The offset of the stream's last message now, or None when it holds none.

    Read from ``last`` (the broker starts at the last chunk, so this costs one chunk).
    """
    tail = None
    for delivery in broker.stream(queue, "last", idle=0.3, prefetch=1000):
        tail = max(tail if tail is not None else -1, offset_of(delivery))
    return tail


def stream_head(broker: Broker, queue: str) -> int | None:
    """The offset of the first message a reader at ``first`` gets now (what retention kept), or None
    when it holds none. One message is read (credit 1), waiting at most 0.3 s for it."""
    with closing(broker.stream(queue, "first", idle=0.3, prefetch=1)) as reading:
        first = next(reading, None)
    return None if first is None else offset_of(first)


def decode(delivery: Delivery) -> HistoryEvent | None:
    try:
        return _DECODER.decode(delivery.body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def entry_of(delivery: Delivery, trust_user_id: bool = True) -> Entry:
    """A history message as read. An event the broker does not vouch for is no event of the desk it
    names, as for the consumers, which dead-letter it: its routing key is not the one it is published
    with (desk A's key, desk B or a callback in the body), no user_id, or desk A's user naming desk B.
    It shows as spoofed and never under --desk, --call or a time range."""
    event = decode(delivery)
    offset = offset_of(delivery)
    if event is None:
        return Entry(offset, delivery, None, "unreadable")
    user = delivery.user_id
    speaks_for = desk_of_user(user)
    if event.routing_key != delivery.routing_key:
        problem = f"spoofed: a {event.routing_key!r} event under key {delivery.routing_key!r}"
    elif trust_user_id and not user:
        problem = "spoofed: no user_id, the broker vouches for no sender"
    elif trust_user_id and speaks_for not in (None, event.desk):
        problem = f"spoofed: desk {event.desk!r} in the event, user {user!r}"
    else:
        return Entry(offset, delivery, event)
    return Entry(offset, delivery, None, problem)


class Query(NamedTuple):
    """What ``tcx-bridge history`` shows: a range of occurred_at, one desk, one call."""

    since: datetime | None = None
    until: datetime | None = None
    desk: str | None = None
    call: str | None = None
    trust_user_id: bool = True  # the setting: judge each event's sender by the broker-checked user_id

    def start(self, now: datetime) -> Offset:
        """Where to read from: before --since, the last day for --call alone, else the stream's start."""
        if self.since is not None:
            return self.since - SLACK
        if self.call is not None:
            return now - CALL_WINDOW
        return "first"

    def keeps(self, entry: Entry) -> bool:
        event = entry.event
        if event is None:
            return self.desk is None and self.call is None and self.since is None and self.until is None
        if self.desk is not None and event.desk != self.desk:
            return False
        if self.call is not None and getattr(event, "call_id", None) != self.call:
            return False
        if self.since is None and self.until is None:
            return True
        moment = events.parse_time(event.occurred_at)
        return (self.since is None or moment >= self.since) and (self.until is None or moment <= self.until)


def entries(broker: Broker, queue: str, query: Query, *, follow: bool = False) -> Iterator[Entry]:
    """The history's events query keeps, in stream order; without follow, up to the tail found at start."""
    tail = None if follow else stream_tail(broker, queue)
    if tail is None and not follow:
        return
    stop_at = None if query.until is None or follow else query.until.timestamp() + PAST_UNTIL
    start = stream_argument(query.start(datetime.now(UTC)))
    if follow and query.since is None and query.call is None:  # the last few, then what comes
        last = stream_tail(broker, queue)
        start = "next" if last is None else max(0, last - FOLLOW_LAST + 1)
    reading = broker.stream(queue, start, idle=86_400.0 * 365 if follow else IDLE)
    with closing(reading):  # stopped early: the stream's consumer is cancelled at once
        yield from _kept(reading, query, tail, stop_at)


def _kept(
    reading: Iterator[Delivery], query: Query, tail: int | None, stop_at: float | None
) -> Iterator[Entry]:
    for delivery in reading:
        entry = entry_of(delivery, query.trust_user_id)
        if query.keeps(entry):
            yield entry
        if tail is not None and entry.offset >= tail:
            return
        if stop_at is not None and delivery.timestamp and delivery.timestamp > stop_at:
            return


def as_json(entry: Entry) -> bytes:
    """One JSON line: the offset, routing key, the broker-checked user and the event as on the wire."""
    event = msgspec.json.decode(entry.delivery.body) if entry.event is not None else None
    return events.ENCODER.encode(
        {
            "offset": entry.offset,
            "routing_key": entry.delivery.routing_key,
            "user_id": entry.delivery.user_id,
            "event": event,
        }
    )


COLUMNS = ("offset", "occurred_at", "what", "desk", "call_id", "number", "detail")
# each column's usual width (call.connected.outbound, a desk, a 3CX call id, an E.164 number); a longer
# cell pushes the rest of its line on, as rows are printed as they come (--follow) and never measured
WIDTHS = (7, 27, 23, 8, 14, 15, 0)


def nothing_found(call: str | None, since_given: bool) -> str:
    """What ``history`` says (on stderr) when no event matched."""
    if call and not since_given:
        return f"no event of call {call!r} in the last 24 hours; give --since for an older call"
    return f"no event {f'of call {call!r} ' if call else ''}in the history for that"


def as_line(cells: tuple[str, ...]) -> str:
    """A row (or COLUMNS) as a line of the table: each cell padded to its column's width."""
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, WIDTHS, strict=True)).rstrip()


def as_row(entry: Entry) -> tuple[str, ...]:
    """The table's cells: an event's time, what it is (call.started.inbound, dial.confirmed), and its call."""
    event = entry.event
    if event is None:
        return (str(entry.offset), "", entry.delivery.routing_key, "", "", "", entry.problem or "unreadable")
    if isinstance(event, events.CallEvent):
        what = f"call.{event.kind}.{event.direction}"
        number = event.caller_id or ("anonymous" if event.anonymous else "")
        detail = event.reason or ""
    elif isinstance(event, events.DialResult):
        what, number, detail = f"dial.{event.status}", event.number, event.reason or event.request_id
    else:  # callback.opened / assigned / closed (docs/callbacks.md)
        outcome = getattr(event, "outcome", None)
        what, number, detail = event.routing_key, event.number_e164, f"task {event.task_id}"
        detail += f" {outcome}" if outcome else ""
    call_id = getattr(event, "call_id", None) or ""
    return (str(entry.offset), event.occurred_at, what, event.desk or "", call_id, number, detail)
