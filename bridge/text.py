"""Text that is safe to show: control characters found and made visible, long cells cut.

Caller ids come from the outside world. A stored value is printed only through
:func:`printable`, so an escape sequence, a bell, a NUL or a right-to-left
override in a caller id can never act on an admin's terminal or spreadsheet, and
a zero-width character cannot hide in it. Bytes that are not UTF-8 (Python reads
them from argv as lone surrogates, which no encoder takes) are stored escaped
by :func:`escape_undecodable`. Every CSV cell we write goes through
:func:`csv_cell`, so a caller id such as ``=cmd|' /C calc'!A0`` is never a formula
when the file is opened in a spreadsheet.
"""

from __future__ import annotations

import re

# C0, DEL, C1, and the bidirectional embeddings, overrides and isolates
CONTROL = "[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
# shown escaped too, but allowed in an id: the zero-width space, word joiner and invisible operators,
# the BOM, and lone surrogates (bytes that were not UTF-8). Not the zero-width (non-)joiner and the
# direction marks: Persian, Indic and Arabic names and emoji sequences need them.
INVISIBLE = CONTROL[:-1] + "\u200b\u2060-\u2064\ufeff\ud800-\udfff]"
SURROGATE = "[\ud800-\udfff]"
_compiled: dict[str, re.Pattern[str]] = {}  # compiled on first use: most text is printable


def _control() -> re.Pattern[str]:
    return _compiled.get(CONTROL) or _compiled.setdefault(CONTROL, re.compile(CONTROL))


def _invisible() -> re.Pattern[str]:
    return _compiled.get(INVISIBLE) or _compiled.setdefault(INVISIBLE, re.compile(INVISIBLE))


ELLIPSIS = "…"
MAX_ID = 128  # characters of a call id or caller id in a valid event (longer: the event is invalid)


def has_control(value: str) -> bool:
    """True when value holds a control or bidi-override character."""
    return not value.isprintable() and _control().search(value) is not None


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: str, width: int | None = None) -> str:
    """value with each control or invisible character as an escape (``\\x1b``, ``\\u200b``), cut at width."""
    shown = value if value.isprintable() else _invisible().sub(_escape, value)
    if width is not None and len(shown) > width:
        return shown[: max(width - 1, 0)] + ELLIPSIS
    return shown


def _escape_byte(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def escape_undecodable(value: str) -> str:
    """value with each byte that was not UTF-8 as ``\\xNN`` (any other lone surrogate: ``\\udXXX``).

    Python decodes argv with surrogateescape (and Windows may pass unpaired UTF-16
    halves); such a string can be neither encoded nor stored, so its escape is kept.
    """
    if value.isprintable():
        return value
    surrogate = _compiled.get(SURROGATE) or _compiled.setdefault(SURROGATE, re.compile(SURROGATE))
    return surrogate.sub(_escape_byte, value)


def id_problem(name: str, value: str | None) -> str | None:
    """Why a call id or caller id cannot be in a valid event, or None."""
    if value is None:
        return None
    if len(value) > MAX_ID:
        return f"{name} has {len(value)} characters, over the maximum of {MAX_ID}"
    if has_control(value):
        return f"{name} {printable(repr(value))} holds control characters"
    return None


# A spreadsheet reads a cell that begins with one of these as a formula (OWASP's CSV
# injection rule); the full-width forms too, as Excel's Japanese and Chinese editions do.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
TEXT_MARK = "'"  # the spreadsheets' own "this cell is text" mark


def neutralise_formula(value: str) -> str:
    """value with ``'`` in front when a spreadsheet would read it as a formula, else value itself.

    ``+41 44 123 45 67`` becomes ``'+41 44 123 45 67``: text, never a sum. A value
    whose first character after leading spaces starts a formula counts too (some
    spreadsheets trim cells while importing).
    """
    if value.startswith(FORMULA_START) or value.lstrip(" \n")[:1] in FORMULA_START[:4]:
        return TEXT_MARK + value
    return value


def unneutralise_formula(value: str) -> str:
    """The inverse of :func:`neutralise_formula`, for reading back a file we wrote (contacts import)."""
    if value.startswith(TEXT_MARK) and neutralise_formula(value[1:]) == value:
        return value[1:]
    return value


def csv_cell(value: object) -> object:
    """A cell for any CSV we write: a string with controls made visible and formulas neutralised.

    Numbers, None and booleans are ours, not a caller's, and stay as they are.
    """
    if isinstance(value, str):
        return neutralise_formula(printable(value))
    return value
