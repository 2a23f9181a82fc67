"""The privacy section: how long each consumer keeps its records, and how analytics keeps numbers.

The wire's own retention settings (``retention_logs``, ``retention_dead``) and
``log_numbers`` live in bridge/keys.py; these are read by the consumers and by
``tcx-bridge privacy sweep`` only. Retentions are seconds (None: kept forever).
"""

from __future__ import annotations

from typing import Any

import msgspec

from bridge.errors import ConfigError
from bridge.keys import Key
from bridge.sections import Section
from bridge.values import parse_retention, parse_text

DAY = 86400.0


class Options(msgspec.Struct, frozen=True, kw_only=True):
    retention_calls: float | None
    retention_daily: float | None
    retention_journal: float | None
    retention_wallboard: float | None
    retention_callbacks: float | None
    retention_dials: float | None
    analytics_numbers: str


def parse_analytics_numbers(name: str, value: Any) -> str:
    text = parse_text(name, value).strip().lower()
    if text not in ("full", "hashed"):
        raise ConfigError(f"{name}: {value!r} is not a way to keep numbers; use full or hashed")
    return text


def _days(days: float | None) -> Any:
    return lambda _, __: None if days is None else days * DAY


SECTION = Section(
    "privacy",
    (
        Key(
            "retention_calls", _days(90), parse_retention, "analytics: per-call records kept (days; 0: kept)"
        ),
        Key(
            "retention_daily",
            _days(None),
            parse_retention,
            "analytics: calls_daily rows of deleted calls kept (no numbers; default: kept)",
        ),
        Key("retention_journal", _days(365), parse_retention, "crm: journal and call records kept (days)"),
        Key("retention_wallboard", _days(7), parse_retention, "wallboard: call records kept (days)"),
        Key(
            "retention_callbacks",
            _days(30),
            parse_retention,
            "callbacks: finished callback tasks kept (days)",
        ),
        Key("retention_dials", _days(30), parse_retention, "agent: the desk's dial records kept (days)"),
        Key(
            "analytics_numbers",
            lambda _, __: "full",
            parse_analytics_numbers,
            "analytics: full keeps caller ids; hashed keeps a keyed hash (repeat callers still counted)",
        ),
    ),
    Options,
)


def options_of(settings: Any) -> Options:
    """The privacy options loaded with settings (the defaults without settings or the section)."""
    try:
        if settings is not None:
            found: Options = SECTION.of(settings)
            return found
    except ConfigError:
        pass
    return Options(**{key.name: key.default({}, {}) for key in SECTION.keys})
