"""The one builder of outgoing messages: our JSON, the AMQP properties given, stamped now."""

from __future__ import annotations

import time

import msgspec

from bridge import events
from bridge.envelope import build_outgoing


def test_build_outgoing_encodes_the_message_and_stamps_it_now() -> None:
    request = events.DialRequest(request_id="r1", number="0791234567", desk="d1")
    before = int(time.time())
    message = build_outgoing(
        request, routing_key="desk.d1.dial", message_id="r1", type="dial", app_id="x", expiration_ms=1500
    )
    assert msgspec.json.decode(message.body, type=events.DialRequest) == request
    assert message.body == events.ENCODER.encode(request)
    assert (message.routing_key, message.message_id, message.type, message.app_id) == (
        "desk.d1.dial",
        "r1",
        "dial",
        "x",
    )
    assert message.expiration_ms == 1500
    assert before <= message.timestamp <= int(time.time())
    assert (message.headers, message.user_id) == (None, None)  # the broker connection signs it
