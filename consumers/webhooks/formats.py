"""What a target receives for an event: the bridge's own JSON, a CloudEvent, or Zammad's Generic CTI.

``native``       the event as it is on the wire (docs/messages.md), re-encoded by msgspec
``cloudevents``  CloudEvents 1.0, structured JSON mode (``application/cloudevents+json``)::

                     specversion "1.0"; id = the event id; source "/tcx-bridge/<namespace>";
                     type com.3cx.assistant.call.<kind> | com.3cx.assistant.dial.<status>;
                     time = occurred_at; subject = the desk; datacontenttype application/json;
                     data = the native event

``zammad``       Zammad's Generic CTI (docs.zammad.org, api/generic-cti), JSON: call events only::

                     event      newCall (S) | answer (C) | hangup (E)
                     from, to   inbound: the caller ("anonymous" when withheld) -> the desk's extension
                                (else the desk); outbound: the extension -> the number dialed
                     direction  in | out;  callId = the Assistant's call id
                     user       [agent name] from webhook_agents (the form field user[]), when known
                     answeringNumber  the extension (else the desk) on answer, and on hangup if answered
                     cause      on hangup: normalClearing when the call was answered, else cancel
                                (so Zammad lists a never-answered inbound call as missed)

A call's answered state is kept per target in memory (the last MAX_CALLS calls); a
hangup whose call was never seen connected counts as not answered. Events a format
cannot say (Zammad: dial results, invalid launches, an unknown direction) are
skipped: acked and counted, not sent.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec

from bridge.events import ENCODER, CallbackEvent, CallEvent, DialResult

MAX_CALLS = 100_000
CLOUDEVENTS_TYPE = "application/cloudevents+json"
JSON_TYPE = "application/json"
_ZAMMAD_EVENTS = {"started": "newCall", "connected": "answer", "ended": "hangup"}
_ZAMMAD_DIRECTIONS = {"inbound": "in", "outbound": "out"}


class Rendered(NamedTuple):
    """One request's body and content type."""

    content_type: str
    body: bytes


BusEvent = CallEvent | DialResult | CallbackEvent  # what a target may be sent


def event_id(message: BusEvent) -> str:
    """The id receivers see (webhook-id, CloudEvents id): stable across retries and replays."""
    if isinstance(message, DialResult):
        return f"dial-{message.request_id}-{message.status}"
    return message.event_id


def cloudevent_type(message: BusEvent) -> str:
    if isinstance(message, CallEvent):
        return f"com.3cx.assistant.call.{message.kind}"
    if isinstance(message, DialResult):
        return f"com.3cx.assistant.dial.{message.status}"
    return f"com.3cx.assistant.{message.routing_key}"  # callback.opened, callback.assigned, callback.closed


def cloudevent(message: BusEvent, namespace: str) -> dict[str, Any]:
    """The CloudEvents 1.0 attributes and data of an event (no subject for a callback closed by no desk)."""
    attributes = {
        "specversion": "1.0",
        "id": event_id(message),
        "source": f"/tcx-bridge/{namespace}",
        "type": cloudevent_type(message),
        "time": message.occurred_at,
        "subject": message.desk,
        "datacontenttype": JSON_TYPE,
        "data": msgspec.to_builtins(message),
    }
    if attributes["subject"] is None:
        del attributes["subject"]
    return attributes


class Calls:
    """Which calls were answered (connected seen), for Zammad's hangup cause; bounded, thread-safe."""

    def __init__(self, limit: int = MAX_CALLS) -> None:
        self._answered: OrderedDict[str, bool] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def saw(self, message: CallEvent) -> bool:
        """Record the event; whether its call has been answered (connected) by now."""
        key = f"{message.desk}/{message.call_id}"
        with self._lock:
            answered = self._answered.pop(key, False) or message.kind == "connected"
            self._answered[key] = answered  # kept after the hangup too: a retried hangup says the same
            if len(self._answered) > self._limit:
                self._answered.popitem(last=False)
            return answered


def zammad(message: BusEvent, calls: Calls, agents: Mapping[str, str]) -> dict[str, Any] | None:
    """The Generic CTI fields of a call event; None for what Zammad has no event for."""
    if not isinstance(message, CallEvent) or message.kind not in _ZAMMAD_EVENTS:
        return None
    direction = _ZAMMAD_DIRECTIONS.get(message.direction)
    if direction is None or not message.call_id:
        return None
    answered = calls.saw(message)
    own = message.extension or message.desk
    other = "anonymous" if message.anonymous or not message.caller_id else message.caller_id
    fields: dict[str, Any] = {
        "event": _ZAMMAD_EVENTS[message.kind],
        "from": other if direction == "in" else own,
        "to": own if direction == "in" else other,
        "direction": direction,
        "callId": message.call_id,
    }
    agent = agents.get(message.desk)
    if agent:
        fields["user"] = [agent]
    if message.kind == "connected" or (message.kind == "ended" and answered):
        fields["answeringNumber"] = own
    if message.kind == "ended":
        fields["cause"] = "normalClearing" if answered else "cancel"
    return fields


class Formatter:
    """Renders events in one target's format (Zammad's keeps the target's call states)."""

    def __init__(self, kind: str, namespace: str, agents: Mapping[str, str]) -> None:
        self.kind = kind
        self.namespace = namespace
        self.agents = dict(agents)
        self.calls = Calls()

    def render(self, message: BusEvent) -> Rendered | None:
        """The request for an event; None when the format has nothing to say for it (skipped)."""
        if self.kind == "cloudevents":
            return Rendered(CLOUDEVENTS_TYPE, ENCODER.encode(cloudevent(message, self.namespace)))
        if self.kind == "zammad":
            fields = zammad(message, self.calls, self.agents)
            return None if fields is None else Rendered(JSON_TYPE, ENCODER.encode(fields))
        return Rendered(JSON_TYPE, ENCODER.encode(message))
