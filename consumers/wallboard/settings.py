"""The wallboard's settings: who may look, how it writes times and numbers, its thresholds.

Registered in pyproject.toml (``tcx_bridge.settings``); read with ``WALLBOARD.of(settings)``.
Their names are a public contract (TOML keys, ``TCX_BRIDGE_*`` variables): never rename one.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from bridge.errors import ConfigError
from bridge.keys import Key, const
from bridge.sections import Section
from bridge.values import at_least, parse_duration, parse_optional_text, parse_text


def _figure(number: float) -> str:
    return str(int(number)) if number.is_integer() else str(number)


class Thresholds(msgspec.Struct, frozen=True):
    """The wallboard's amber and red levels by measure (waiting, wait, missed), as given.

    ``str()`` is the canonical text (``wait=30/60,missed=5/10``), as ``config`` shows it.
    """

    levels: tuple[tuple[str, float, float], ...]

    def as_dict(self) -> dict[str, list[float]]:
        """{measure: [amber, red]}, as the wallboard's page reads them."""
        return {name: [amber, red] for name, amber, red in self.levels}

    def __str__(self) -> str:
        return ",".join(f"{name}={_figure(amber)}/{_figure(red)}" for name, amber, red in self.levels)


def parse_thresholds(name: str, value: Any) -> Thresholds:
    """``waiting=2/5,wait=30/60,missed=5/10``: a measure named again takes its last levels."""
    found: dict[str, tuple[float, float]] = {}
    for part in filter(None, (item.strip() for item in parse_text(name, value).split(","))):
        key, _, levels = part.partition("=")
        amber, _, red = levels.partition("/")
        try:
            ok = key.strip() in ("waiting", "wait", "missed") and float(amber) <= float(red)
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(
                f"{name}: {part!r} is not name=amber/red with name waiting, wait or missed (e.g. wait=30/60)"
            )
        found[key.strip()] = (float(amber), float(red))
    return Thresholds(tuple((key, amber, red) for key, (amber, red) in found.items()))


def parse_locale(name: str, value: Any) -> str | None:
    text = parse_optional_text(name, value)
    if text is not None and not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,4}", text):
        raise ConfigError(f"{name}: {value!r} is not a locale; use a language tag such as de-CH or en-US")
    return text


def parse_hostnames(name: str, value: Any) -> str:
    """Comma-separated host names (or a TOML array), lower case."""
    if isinstance(value, list):
        value = ",".join(parse_text(name, item) for item in value)
    names = [part.strip().lower().rstrip(".") for part in parse_text(name, value).split(",") if part.strip()]
    for host in names:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*|[0-9a-f:.]+", host):
            raise ConfigError(f"{name}: {host!r} is not a host name; use e.g. wallboard.example.com")
    return ",".join(names)


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
