"""Every message on the wire, as msgspec Structs; one Encoder, one Decoder.

This module is the wire-format contract. Rules (msgspec schema evolution):
new fields get defaults, an existing field never changes type, and decoders
ignore unknown fields so older consumers keep working with newer producers.
Every message carries ``type`` (its tag) and ``schema_version``.
"""

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Literal

import msgspec

from bridge.ids import new_event_id as new_event_id  # where the events are made
from bridge.text import MAX_ID, id_problem, printable

SCHEMA_VERSION = 1
APP_ID = "tcx-bridge"

# The limits of the wire format: consumers refuse what is beyond them, so whatever
# takes a value in (config, notify, contact import) checks it against these.
MAX_BODY = 64 * 1024  # bytes of a message body; a bigger message is dead-lettered unread
MAX_DESK = 64  # characters of a desk id
DESK_CHARACTERS = "A-Za-z0-9_-"  # a desk id's alphabet: it is one word of routing keys and user names
MAX_EXTENSION = 32
MAX_EVENT_ID = 128
MAX_NUMBER = 64
MAX_NAME = 200
MAX_URL = 2048
MAX_REASON = 4000
MAX_REQUEST_ID = 200
_DESK_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")

TIME_PATTERN = (
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)
_time_re: re.Pattern[str] | None = None  # compiled on first use: a launch never needs it
Timestamp = Annotated[
    str,
    msgspec.Meta(
        description=(
            "RFC 3339 date-time: 0-9 fraction digits, Z or a numeric offset, T or a space. "
            "tcx-bridge emits UTC with microseconds, e.g. 2026-11-27T16:32:28.123456Z, "
            "and reads any other form into that one."
        ),
        extra_json_schema={"format": "date-time"},
    ),
]


def _text(maximum: int, description: str | None = None) -> msgspec.Meta:
    return msgspec.Meta(max_length=maximum, description=description)


Desk = Annotated[str, _text(MAX_DESK, "the desk id")]
Extension = Annotated[str, _text(MAX_EXTENSION)]
EventId = Annotated[str, _text(MAX_EVENT_ID)]
Number = Annotated[str, _text(MAX_NUMBER)]
Name = Annotated[str, _text(MAX_NAME)]  # a name, company or email in a screen pop (contacts import checks it)
Reason = Annotated[str, _text(MAX_REASON)]
CallKind = Literal["started", "connected", "ended", "invalid"]
Direction = Literal["inbound", "outbound", "unknown"]
DialStatus = Literal["dialed", "confirmed", "unconfirmed", "rejected", "expired", "failed"]


class CallEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="call"):
    """One launch of the registered executable (routing key ``call.<kind>.<direction>.<desk>``)."""

    schema_version: int = SCHEMA_VERSION
    event_id: EventId
    kind: CallKind
    direction: Direction
    call_id: Annotated[str, msgspec.Meta(description=f"at most {MAX_ID} characters unless invalid")] | None
    caller_id: Annotated[str, msgspec.Meta(description=f"at most {MAX_ID} characters unless invalid")] | None
    anonymous: bool = False
    desk: Desk
    extension: Extension | None
    occurred_at: Timestamp
    argv: tuple[str, ...]
    reason: Reason | None = None

    def __post_init__(self) -> None:
        _canonical(self, "occurred_at")
        if self.kind != "invalid":
            for name in ("call_id", "caller_id"):
                problem = id_problem(name, getattr(self, name))
                if problem:
                    raise ValueError(problem)

    @property
    def routing_key(self) -> str:
        if self.kind == "invalid":
            return f"call.invalid.{self.desk}"
        return f"call.{self.kind}.{self.direction}.{self.desk}"


class Contact(msgspec.Struct, frozen=True, kw_only=True):
    """A CRM contact, as shown in a screen pop."""

    name: Name
    company: Name | None = None
    email: Name | None = None
    url: Annotated[str, _text(MAX_URL)] | None = None


class ScreenPop(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="popup"):
    """Who is calling, for the desk (``tcx.commands``, routing key ``desk.<desk>.popup``)."""

    schema_version: int = SCHEMA_VERSION
    event_id: EventId
    call_id: Annotated[str, _text(MAX_ID)]
    desk: Desk
    caller_id: Annotated[str, _text(MAX_ID)] | None
    number_e164: Number | None
    contact: Contact | None
    occurred_at: Timestamp

    def __post_init__(self) -> None:
        _canonical(self, "occurred_at")


class DialRequest(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="dial"):
    """Ask a desk to dial (``tcx.commands``, routing key ``desk.<desk>.dial``).

    ``type`` and ``schema_version`` may be left out by other languages' publishers.
    """

    schema_version: int = SCHEMA_VERSION
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_REQUEST_ID)]
    number: Number
    desk: Desk | None = None
    requested_by: Name | None = None
    expires_at: Timestamp | None = None

    def __post_init__(self) -> None:
        _canonical(self, "expires_at")


class DialResult(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="dial.result"):
    """What became of a dial request (``tcx.events``, routing key ``dial.<status>.<desk>``).

    Sequence: ``dialed`` then ``confirmed`` or ``unconfirmed`` (when ``confirm_within``
    is set); or one of ``rejected``, ``expired``, ``failed``.
    """

    schema_version: int = SCHEMA_VERSION
    request_id: Annotated[str, _text(MAX_REQUEST_ID)]
    desk: Desk
    number: Number
    status: DialStatus
    reason: Reason | None
    occurred_at: Timestamp
    extension: Extension | None = None
    requested_by: Name | None = None
    call_id: Annotated[str, _text(MAX_ID, "the Assistant's call id, when confirmed")] | None = None
    confirm_within: (
        Annotated[
            float,
            msgspec.Meta(description="on dialed: seconds within which confirmed or unconfirmed follows"),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        _canonical(self, "occurred_at")

    @property
    def routing_key(self) -> str:
        return f"dial.{self.status}.{self.desk}"


class ForgetRequest(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="privacy.forget"):
    """Erase a caller's number in the data each desk agent and consumer holds alone
    (``tcx.commands``, routing key ``privacy.forget``; ``tcx-bridge privacy forget`` publishes it).

    Taken only from the commands exchange with that routing key, which the broker lets
    only the ``tcx-privacy`` user (and ``tcx-admin``) publish, signed with its ``user_id``.
    """

    schema_version: int = SCHEMA_VERSION
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_REQUEST_ID)]
    number: Number
    requested_by: Name | None = None
    requested_at: Timestamp

    def __post_init__(self) -> None:
        _canonical(self, "requested_at")


CallbackOutcome = Literal["reached", "unreached", "closed"]
TaskId = Annotated[int, msgspec.Meta(ge=1, description="the callback task's id (callbacks list)")]


class CallbackOpened(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="callback.opened"):
    """A missed external caller got a callback task (``tcx.events``, routing key ``callback.opened``).

    Published by the callbacks consumer (user ``tcx-callbacks``); a caller who misses
    again before being reached adds to the open task and opens none.
    """

    schema_version: int = SCHEMA_VERSION
    event_id: EventId
    task_id: TaskId
    number: Number
    number_e164: Number
    desk: Annotated[str, _text(MAX_DESK, "the desk that missed the call")]
    missed_at: Timestamp
    due_at: Timestamp
    occurred_at: Timestamp

    def __post_init__(self) -> None:
        for name in ("missed_at", "due_at", "occurred_at"):
            _canonical(self, name)

    @property
    def routing_key(self) -> str:
        return "callback.opened"


class CallbackAssigned(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="callback.assigned"):
    """A callback task was given to a desk (``tcx.events``, routing key ``callback.assigned``)."""

    schema_version: int = SCHEMA_VERSION
    event_id: EventId
    task_id: TaskId
    number_e164: Number
    desk: Desk
    by: Literal["auto", "hand"]
    occurred_at: Timestamp

    def __post_init__(self) -> None:
        _canonical(self, "occurred_at")

    @property
    def routing_key(self) -> str:
        return "callback.assigned"


class CallbackClosed(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="callback.closed"):
    """A callback task closed (``tcx.events``, routing key ``callback.closed``).

    ``reached``: the caller was answered or connected (``desk`` who reached them,
    ``seconds`` from the first missed call); ``unreached``: ``callback_max_attempts``
    dials went out unanswered; ``closed``: by hand, with ``reason``.
    """

    schema_version: int = SCHEMA_VERSION
    event_id: EventId
    task_id: TaskId
    number_e164: Number
    outcome: CallbackOutcome
    desk: Desk | None = None
    reason: Reason | None = None
    missed_count: int
    attempts: int
    missed_at: Timestamp
    seconds: Annotated[float, msgspec.Meta(description="reached: seconds from the first missed call")] | None
    occurred_at: Timestamp

    def __post_init__(self) -> None:
        for name in ("missed_at", "occurred_at"):
            _canonical(self, name)

    @property
    def routing_key(self) -> str:
        return "callback.closed"


CallbackEvent = CallbackOpened | CallbackAssigned | CallbackClosed
MESSAGES: tuple[type[msgspec.Struct], ...] = (
    CallEvent,
    ScreenPop,
    DialRequest,
    DialResult,
    ForgetRequest,
    CallbackOpened,
    CallbackAssigned,
    CallbackClosed,
)

ENCODER = msgspec.json.Encoder()
CALL_EVENT_DECODER = msgspec.json.Decoder(CallEvent)
EVENT_DECODER = msgspec.json.Decoder(CallEvent | DialResult)
SCREEN_POP_DECODER = msgspec.json.Decoder(ScreenPop)
DIAL_REQUEST_DECODER = msgspec.json.Decoder(DialRequest)
CALLBACK_DECODER = msgspec.json.Decoder(CallbackEvent)
FORGET_DECODER = msgspec.json.Decoder(ForgetRequest)
FORGET_KEY = "privacy.forget"  # its routing key on the commands exchange


def desk_problem(value: str) -> str | None:
    """Why value cannot be a desk id on the wire (said after the quoted value), or None."""
    if not value:
        return f"is empty; give a desk id of 1 to {MAX_DESK} of {DESK_CHARACTERS}"
    if len(value) > MAX_DESK:
        return f"has {len(value)} characters, over the maximum of {MAX_DESK}; give a shorter desk id"
    if not _DESK_ALPHABET.issuperset(value):
        bad = "".join(dict.fromkeys(character for character in value if character not in _DESK_ALPHABET))
        return f"holds {printable(repr(bad))}, not allowed in a desk id; use only {DESK_CHARACTERS}"
    return None


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC, always with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> str:
    """The current time as a wire timestamp."""
    return format_time(datetime.now(UTC))


def parse_time(value: str) -> datetime:
    """Parse any RFC 3339 time (see Timestamp) into an aware datetime; ValueError names a bad one."""
    if len(value) == 27 and value[10] == "T" and value[-1] == "Z":  # our own form: the fast path
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass  # said precisely below
    global _time_re  # a lazily compiled module constant
    if _time_re is None:
        _time_re = re.compile(TIME_PATTERN)
    found = _time_re.match(value)
    if found is None:
        raise ValueError(f"{value!r} is not an RFC 3339 date-time (like 2026-11-27T16:32:28.123Z)")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = found.groups()
    zone = UTC
    if not zulu:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        if offset >= timedelta(hours=24):
            raise ValueError(f"{value!r} has an impossible UTC offset")
        zone = timezone(-offset if sign == "-" else offset)
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=zone,
        )
    except ValueError as error:
        raise ValueError(f"{value!r} is not a possible date-time: {error}") from None


def canonical_time(value: str) -> str:
    """Any RFC 3339 time in the one form tcx-bridge emits (UTC, microseconds, Z)."""
    if len(value) == 27 and value[10] == "T" and value[-1] == "Z" and value[19] == ".":
        parse_time(value)  # the usual form: only check that the date is possible
        return value
    try:
        return format_time(parse_time(value))
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59: a possible date whose UTC time is not
        raise ValueError(f"{value!r} is out of the range of dates in UTC (years 1 to 9999)") from None


def _canonical(message: msgspec.Struct, field: str) -> None:
    """Normalise a time field of a (frozen) message in place; ValueError makes it invalid."""
    value = getattr(message, field)
    if value is not None:
        msgspec.structs.force_setattr(message, field, canonical_time(value))
