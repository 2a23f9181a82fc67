"""The callbacks consumer's settings: its own keys, parsed once into :class:`CallbackOptions`.

Registered in pyproject.toml (``tcx_bridge.settings``); read with ``CALLBACKS.of(settings)``
(or :func:`options_of`). Their names are a public contract: never rename one.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.keys import Key, const
from bridge.sections import Section
from bridge.values import at_least, parse_duration, parse_optional_text, parse_prefixes
from consumers.callbacks.hours import Hours, parse_hours

Assign = Literal["manual", "auto"]


def parse_assign(name: str, value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("manual", "auto"):
        raise ConfigError(f"{name}: {value!r} is not manual or auto")
    return text


KEYS: tuple[Key, ...] = (
    Key(
        "callback_sla",
        const(900.0),
        parse_duration,
        "callbacks: a missed caller is due to be called back this long after (minutes, or 90s, 2h)",
    ),
    Key(
        "business_hours",
        const(None),
        parse_hours,
        "callbacks: the hours callback_sla counts in, e.g. 'Mon-Fri 08:00-18:00' (timezone's; default: all)",
    ),
    Key(
        "callback_ignore",
        const(()),
        parse_prefixes,
        "callbacks: E.164 prefixes whose missed calls open no task, e.g. +41800",
    ),
    Key(
        "callback_max_attempts",
        const(3),
        at_least(int, 1),
        "callbacks: dials that went out unanswered before a task closes as unreached",
    ),
    Key(
        "callback_assign",
        const("manual"),
        parse_assign,
        "callbacks: auto gives each open task to an idle desk, round robin (manual: callbacks assign)",
    ),
    Key(
        "wallboard_dial_token",
        const(None),
        parse_optional_text,
        "wallboard: a second token whose holders see the Call back button (never the read-only token)",
        secret=True,
    ),
    Key(
        "callback_dial_url",
        const(None),
        parse_optional_text,
        "wallboard: broker URL with the tcx-dialer user's password, for Call back (default: amqp_url)",
        secret=True,
    ),
)


class CallbackOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The parsed callbacks settings (see KEYS)."""

    callback_sla: float = 900.0
    business_hours: Hours | None = None
    callback_ignore: tuple[str, ...] = ()
    callback_max_attempts: int = 3
    callback_assign: str = "manual"
    wallboard_dial_token: str | None = None
    callback_dial_url: str | None = None


CALLBACKS = Section("callbacks", KEYS, CallbackOptions)


def options_of(settings: Settings) -> CallbackOptions:
    """The callbacks options loaded with settings."""
    found: CallbackOptions = CALLBACKS.of(settings)
    return found
