"""The wallboard's settings: who may look, how it writes times and numbers, its thresholds.

Registered in pyproject.toml (``tcx_bridge.settings``); read with ``WALLBOARD.of(settings)``.
Their names are a public contract (TOML keys, ``TCX_BRIDGE_*`` variables): never rename one.
"""

from __future__ import annotations

import msgspec

from bridge.keys import Key, const
from bridge.sections import Section
from bridge.values import (
    Thresholds,
    at_least,
    parse_duration,
    parse_hostnames,
    parse_locale,
    parse_optional_text,
    parse_thresholds,
)


class WallboardOptions(msgspec.Struct, frozen=True, kw_only=True):
    desk_idle_minutes: float
    wallboard_token: str | None
    wallboard_thresholds: Thresholds
    wallboard_lost_after: float
    wallboard_locale: str | None
    wallboard_hostnames: str


WALLBOARD = Section(
    "wallboard",
    (
        Key(
            "desk_idle_minutes",
            const(15.0),
            at_least(float, 1.0),
            "wallboard: a desk with no event this long is quiet",
        ),
        Key(
            "wallboard_token",
            const(None),
            parse_optional_text,
            "wallboard: the token a non-local bind requires",
            secret=True,
        ),
        Key(
            "wallboard_thresholds",
            const(parse_thresholds("wallboard_thresholds", "waiting=2/5,wait=30/60,missed=5/10")),
            parse_thresholds,
            "wallboard: amber/red for calls waiting, longest wait (s) and missed calls",
        ),
        Key(
            "wallboard_lost_after",
            const(1800.0),
            parse_duration,
            "wallboard: a call with no end event this long (minutes, or 90s, 2h) is shown as no end seen",
        ),
        Key(
            "wallboard_locale",
            const(None),
            parse_locale,
            "wallboard: how times and numbers are written, e.g. de-CH, en-US "
            "(default: 24-hour clock, 1,234.5)",
        ),
        Key(
            "wallboard_hostnames",
            const(""),
            parse_hostnames,
            "wallboard: host names browsers may use besides its bind address, e.g. wallboard.example.com",
        ),
    ),
    WallboardOptions,
)
