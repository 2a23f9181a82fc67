"""Every message on the wire, as msgspec Structs; one Encoder, one Decoder.

This module is the wire-format contract. Rules (msgspec schema evolution):
new fields get defaults, an existing field never changes type, and decoders
ignore unknown fields so older consumers keep working with newer producers.
Every message carries ``type`` (its tag) and ``schema_version``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec

SCHEMA_VERSION = 1
APP_ID = "tcx-bridge"

Timestamp = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$",
        description="RFC 3339 time in UTC with microseconds, e.g. 2026-11-27T16:32:28.123456Z",
    ),
]
CallKind = Literal["started", "connected", "ended", "invalid"]
Direction = Literal["inbound", "outbound", "unknown"]
DialStatus = Literal["dialed", "rejected", "expired", "failed"]


class CallEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="call"):
    """One launch of the registered executable (routing key ``call.<kind>.<direction>.<desk>``)."""

    schema_version: int = SCHEMA_VERSION
    event_id: str
    kind: CallKind
    direction: Direction
    call_id: str | None
    caller_id: str | None
    anonymous: bool = False
    desk: str
    extension: str | None
    occurred_at: Timestamp
    argv: tuple[str, ...]
    reason: str | None = None

    @property
    def routing_key(self) -> str:
        if self.kind == "invalid":
            return f"call.invalid.{self.desk}"
        return f"call.{self.kind}.{self.direction}.{self.desk}"


class Contact(msgspec.Struct, frozen=True, kw_only=True):
    """A CRM contact, as shown in a screen pop."""

    name: str
    company: str | None = None
    email: str | None = None
    url: str | None = None


class ScreenPop(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="popup"):
    """Who is calling, for the desk (``tcx.commands``, routing key ``desk.<desk>.popup``)."""

    schema_version: int = SCHEMA_VERSION
    event_id: str
    call_id: str
    desk: str
    caller_id: str | None
    number_e164: str | None
    contact: Contact | None
    occurred_at: Timestamp


class DialRequest(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="dial"):
    """Ask a desk to dial (``tcx.commands``, routing key ``desk.<desk>.dial``).

    ``type`` and ``schema_version`` may be left out by other languages' publishers.
    """

    schema_version: int = SCHEMA_VERSION
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    number: str
    desk: str | None = None
    requested_by: str | None = None
    expires_at: Timestamp | None = None


class DialResult(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="dial.result"):
    """What became of a dial request (``tcx.events``, routing key ``dial.<status>.<desk>``)."""

    schema_version: int = SCHEMA_VERSION
    request_id: str
    desk: str
    number: str
    status: DialStatus
    reason: str | None
    occurred_at: Timestamp

    @property
    def routing_key(self) -> str:
        return f"dial.{self.status}.{self.desk}"


MESSAGES: tuple[type[msgspec.Struct], ...] = (CallEvent, ScreenPop, DialRequest, DialResult)

ENCODER = msgspec.json.Encoder()
CALL_EVENT_DECODER = msgspec.json.Decoder(CallEvent)
EVENT_DECODER = msgspec.json.Decoder(CallEvent | DialResult)
SCREEN_POP_DECODER = msgspec.json.Decoder(ScreenPop)
DIAL_REQUEST_DECODER = msgspec.json.Decoder(DialRequest)


def new_event_id() -> str:
    """A fresh unique id for one message."""
    return str(uuid.uuid4())


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC, always with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> str:
    """The current time as a wire timestamp."""
    return format_time(datetime.now(UTC))


def parse_time(value: str) -> datetime:
    """Parse a wire timestamp (or any RFC 3339 time) into an aware datetime."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment
