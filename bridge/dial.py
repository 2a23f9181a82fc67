"""Dial requests: number validation, and the Python API for CRM servers.

    from bridge.config import load_settings
    from bridge.dial import request_dial, wait_for_result

    settings = load_settings().settings
    request = request_dial(settings, "+41 44 123 45 67", desk="DESK-07", ttl=60)
    result = wait_for_result(settings, request.request_id, timeout=30)   # optional

A request goes to ``tcx.commands`` with routing key ``desk.<desk>.dial`` (or
``ext.<extension>.dial``); the desk agent answers on ``tcx.events`` with
``dial.<status>.<desk>``.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime, timedelta

import msgspec

from bridge import events
from bridge.access import desk_of_user
from bridge.config import Settings
from bridge.errors import DialError, UnroutableError
from bridge.topology import declare_commands, declare_dial_results, dial_results_queue
from bridge.transport import Broker, Delivery, OutgoingMessage

logger = logging.getLogger(__name__)

MAX_DIGITS = 32
EXPIRATION_GRACE = 300.0  # seconds the broker keeps a request past its expires_at
STREAM_SLACK = 1.0  # a result watch reads the stream from this long before it began
_SEPARATORS = re.compile(r"[ \u00a0.()\-/]")
_DIALABLE = re.compile(r"\+?[0-9*#]+")
_EXTENSION = re.compile(rf"[0-9A-Za-z_-]{{1,{events.MAX_EXTENSION}}}")
_TEL_URI = re.compile(r"^\s*tel:", re.IGNORECASE)
# "+41 (0)41 ...": the trunk zero written after an international prefix is not dialed
_TRUNK_ZERO = re.compile(r"^\s*(\+|00)(\d{1,3})[ \u00a0]*\(0\)")


def clean_number(raw: str) -> str:
    """The number to dial: a ``tel:`` scheme and a ``(0)`` after an international prefix dropped,
    visual separators (space, . - / parentheses) removed, then only an optional leading + and
    0-9 * # allowed.

    Nothing else is rewritten: the PBX's outbound rules decide the rest.
    """
    shown = repr(raw) if len(raw) <= 40 else repr(raw[:40]) + "..."
    number = _TRUNK_ZERO.sub(r"\1\2", _TEL_URI.sub("", raw))
    number = _SEPARATORS.sub("", number)
    if not number:
        raise DialError(f"number {shown} is empty; give digits like +41441234567")
    if not _DIALABLE.fullmatch(number):
        raise DialError(
            f"number {shown} has characters other than digits, * and # (and a leading +); "
            "only spaces, dashes, dots, slashes and parentheses may separate digits"
        )
    if len(number.lstrip("+")) > MAX_DIGITS:
        raise DialError(f"number {shown} has more than {MAX_DIGITS} digits")
    return number


def dial_routing_key(desk: str | None, extension: str | None) -> str:
    """``desk.<desk>.dial`` or ``ext.<extension>.dial``."""
    if desk:
        problem = events.desk_problem(desk)
        if problem is not None:
            raise DialError(f"desk {desk!r} {problem}")
        return f"desk.{desk}.dial"
    if extension:
        if not _EXTENSION.fullmatch(extension):
            raise DialError(f"extension {extension!r} is not an extension; use digits like 101")
        return f"ext.{extension}.dial"
    raise DialError("give a desk or an extension to dial from")


def new_request(
    number: str,
    *,
    ttl: float | None = None,
    requested_by: str | None = None,
    desk: str | None = None,
    request_id: str | None = None,
) -> events.DialRequest:
    """A dial request; the number is checked here too, so a CRM learns of a typo at once."""
    clean_number(number)
    expires_at = None
    if ttl is not None:
        if ttl <= 0:
            raise DialError(f"ttl {ttl!r} must be positive seconds")
        expires_at = events.format_time(datetime.now(UTC) + timedelta(seconds=ttl))
    return events.DialRequest(
        request_id=request_id or events.new_event_id(),
        number=number,
        desk=desk,
        requested_by=requested_by,
        expires_at=expires_at,
    )


def to_message(request: events.DialRequest, routing_key: str, ttl: float | None) -> OutgoingMessage:
    return OutgoingMessage(
        routing_key=routing_key,
        body=events.ENCODER.encode(request),
        message_id=request.request_id,
        type="dial",
        timestamp=int(time.time()),
        app_id="tcx-bridge-dial",
        # The agent reports "expired" from expires_at; the broker's expiration, later, only
        # clears the queue of a desk that stays offline (to its dead-letter queue).
        expiration_ms=None if ttl is None else int((ttl + EXPIRATION_GRACE) * 1000),
    )


def request_dial(
    settings: Settings,
    number: str,
    *,
    desk: str | None = None,
    extension: str | None = None,
    ttl: float | None = None,
    requested_by: str | None = None,
    broker: Broker | None = None,
    request_id: str | None = None,
) -> events.DialRequest:
    """Queue a dial request for a desk (or an extension); return it (its request_id identifies the result).

    A publish that fails may be retried with the same request_id: the agent dials a request_id once.
    """
    routing_key = dial_routing_key(desk, extension)
    request = new_request(number, ttl=ttl, requested_by=requested_by, desk=desk, request_id=request_id)
    message = to_message(request, routing_key, ttl)
    if broker is not None:
        _publish(broker, settings, message)
        return request
    with Broker(settings.amqp_url, ca_file=settings.ca_file, sign=True) as own:
        _publish(own, settings, message)
    return request


def _publish(broker: Broker, settings: Settings, message: OutgoingMessage) -> None:
    declare_commands(broker, settings)
    try:
        broker.publish(settings.commands_exchange, message)
    except UnroutableError:
        raise DialError(
            f"no desk agent listens for {message.routing_key!r} on {settings.commands_exchange!r}; "
            "start tcx-bridge agent on that desk (or run tcx-bridge topology declare) first"
        ) from None


class ResultWatch:
    """Read dial results from the moment it was entered, so that none is missed.

    with ResultWatch(settings) as watch:
        request = request_dial(settings, number, desk=desk, broker=watch.broker)
        result = watch.wait(request.request_id, timeout=30)

    The results come from the stream ``tcx.dial-results`` (declared by an admin's
    ``topology declare``), read from a moment just before the watch began: no
    queue of its own, so the dialer's user needs no configure right. A result is
    believed only from a desk's own user (``user_id``, vouched for by the broker), and,
    when ``wait`` is given the desk the request went to, only from that desk.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = Broker(settings.amqp_url, ca_file=settings.ca_file, sign=True)
        self.since = datetime.now(UTC)
        self._read: int | None = None  # the stream offset of the last result returned

    def __enter__(self) -> ResultWatch:
        self.since = datetime.now(UTC) - timedelta(seconds=STREAM_SLACK)
        self.broker.connect()
        declare_dial_results(self.broker, self.settings)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.broker.close()

    def wait(self, request_id: str, *, timeout: float, desk: str | None = None) -> events.DialResult | None:
        """The result for request_id, or None after timeout seconds.

        desk: the desk the request was sent to; a result from any other desk is ignored
        (a desk's user may publish results for its own desk only, but with any request_id:
        without desk, one that knows or guesses a request_id could answer for another desk).
        """
        deadline = time.monotonic() + timeout
        # from the second before the watch began (a moment in whole seconds), or past the last result
        start: datetime | int = self.since.replace(microsecond=0) if self._read is None else self._read + 1
        arguments = {"x-stream-offset": start}
        for delivery in self.broker.follow(
            dial_results_queue(self.settings), timeout=timeout, arguments=arguments
        ):
            offset = delivery.headers.get("x-stream-offset")
            result = self._result(delivery, request_id)
            if result is not None and desk is not None and result.desk != desk:
                logger.warning("ignored a result for %r from desk %r, not %r", request_id, result.desk, desk)
                result = None
            if result is not None:
                self._read = offset if isinstance(offset, int) else self._read
                return result
            if time.monotonic() >= deadline:
                break
        return None

    def _result(self, delivery: Delivery, request_id: str) -> events.DialResult | None:
        try:
            result = events.EVENT_DECODER.decode(delivery.body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if not isinstance(result, events.DialResult) or result.request_id != request_id:
            return None
        if self.settings.trust_user_id:
            speaks_for = desk_of_user(delivery.user_id)
            if not delivery.user_id or speaks_for not in (None, result.desk):
                logger.warning(
                    "ignored a result for desk %r published by user %r", result.desk, delivery.user_id
                )
                return None  # another desk's user speaking for this one, or nobody the broker vouches for
        return result
