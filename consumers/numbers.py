"""Caller ids to E.164 with phonenumbers, keeping the raw value.

Anonymous callers (empty, "anonymous", "unknown", ...) and internal extensions
(up to ``INTERNAL_MAX_DIGITS`` digits) are recognised and never looked up.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

import phonenumbers

from bridge.config import check_region

__all__ = ["ANONYMOUS", "CallerNumber", "check_region", "display", "normalise"]

INTERNAL_MAX_DIGITS = 6
ANONYMOUS = frozenset({"", "anonymous", "unknown", "private", "withheld", "restricted", "unavailable"})
_SEPARATORS = re.compile(r"[\s().\-/]")

NumberKind = Literal["external", "internal", "anonymous", "invalid"]


class CallerNumber(NamedTuple):
    """A caller id as given, what kind it is, and its E.164 form when it has one."""

    raw: str | None
    kind: NumberKind
    e164: str | None = None


def normalise(raw: str | None, region: str = "CH") -> CallerNumber:
    """Classify and normalise a caller id; national numbers are read in region."""
    if raw is None or raw.strip().lower() in ANONYMOUS:
        return CallerNumber(raw, "anonymous")
    compact = _SEPARATORS.sub("", raw)
    if compact.isdigit() and len(compact) <= INTERNAL_MAX_DIGITS and not compact.startswith("0"):
        return CallerNumber(raw, "internal")
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return CallerNumber(raw, "invalid")
    if not phonenumbers.is_possible_number(parsed):
        return CallerNumber(raw, "invalid")
    return CallerNumber(
        raw, "external", phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    )


def display(raw: str | None, region: str = "CH") -> str | None:
    """How a caller id is shown: national within region's country code, international for the rest.

    ``0791234567`` and ``+41791234567`` both show as ``079 123 45 67`` in CH and as
    ``+41 79 123 45 67`` elsewhere; extensions, anonymous and unreadable ids stay as given.
    """
    read = normalise(raw, region)
    if read.e164 is None:
        return raw.strip() if raw is not None and raw.strip() else None
    parsed = phonenumbers.parse(read.e164)
    if parsed.country_code == phonenumbers.country_code_for_region(region):
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
