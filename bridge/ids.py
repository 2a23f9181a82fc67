"""Event ids: a random UUID (version 4) in its usual text form, made without importing uuid.

``uuid`` brings ``platform`` with it, milliseconds the desk fast path's front
(bridge.launcher, bridge.handoff), which loads nothing but the standard library's
os, sys, time and _socket, does not spend; this is the same id from ``os.urandom``.
(Today's path loads uuid anyway: msgspec imports it.)
"""

from __future__ import annotations

import os


def new_event_id() -> str:
    """A fresh random UUID (version 4, RFC 4122 variant), as ``str(uuid.uuid4())`` gives it."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
