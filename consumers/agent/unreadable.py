"""A dial request that does not decode: whatever else is wrong, its request_id may still be read.

Then the CRM that asked gets ``rejected`` with the reason, rather than waiting for
an answer that never comes; without a readable request_id it is dead-lettered.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from bridge import events
from bridge.text import printable


class Unreadable(NamedTuple):
    """A dial request that cannot be taken, but whose request_id (and number) can be read."""

    request_id: str
    number: str
    reason: str

    @classmethod
    def of(cls, body: bytes, reason: str) -> Unreadable | None:
        """Read only request_id and number: whatever else is wrong, they may be fine."""
        found = _read_ids(body)
        if found is None:
            return None
        request_id, number = found
        if not isinstance(request_id, str) or not 0 < len(request_id) <= events.MAX_REQUEST_ID:
            return None
        try:
            request_id.encode()
        except UnicodeEncodeError:  # a lone surrogate: no result could carry it
            return None
        return cls(request_id, printable(number, events.MAX_NUMBER), printable(reason, 1000))


class _Ids(msgspec.Struct):
    """The two fields a rejection needs, kept as raw JSON (a number may be 1e400 or 5,000 digits long)."""

    request_id: msgspec.Raw = msgspec.Raw(b"null")
    number: msgspec.Raw = msgspec.Raw(b"null")


_IDS_DECODER = msgspec.json.Decoder(_Ids)


def _read_ids(body: bytes) -> tuple[object, str] | None:
    """A request's request_id (any JSON value) and its number as text; None when no JSON object is there."""
    try:
        found = _IDS_DECODER.decode(body)
        request_id = msgspec.json.decode(found.request_id)
        raw = bytes(found.number)
        number = msgspec.json.decode(raw) if raw.startswith(b'"') else raw.decode("utf-8", "replace")
        return request_id, "" if raw == b"null" else str(number)
    except (msgspec.ValidationError, RecursionError):
        return None
    except msgspec.DecodeError:  # e.g. a lone surrogate escape in some field, which Python's json takes
        import json

        try:
            document = json.loads(body.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            return None
        if not isinstance(document, dict):
            return None
        value = document.get("number")
        return document.get("request_id"), "" if value is None else str(value)
