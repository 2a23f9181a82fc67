"""The callbacks consumer's settings: its own keys, parsed once into :class:`CallbackOptions`.

Read with :func:`options_of` (the settings section ``callbacks``, bridge.sections).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.keys import Key
from bridge.values import at_least, parse_duration, parse_optional_text, parse_prefixes
from consumers.callbacks.hours import Hours, parse_hours

Assign = Literal["manual", "auto"]


def _const(value: Any) -> Any:
    return lambda _, __: value


def parse_assign(name: str, value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("manual", "auto"):
        raise ConfigError(f"{name}: {value!r} is not manual or auto")
    return text


KEYS: tuple[Key, ...] = (
    Key(
        "callback_sla",
        _const(900.0),
        parse_duration,
        "callbacks: a missed caller is due to be called back this long after (minutes, or 90s, 2h)",
    ),
    Key(
        "business_hours",
        _const(None),
        parse_hours,
        "callbacks: the hours callback_sla counts in, e.g. 'Mon-Fri 08:00-18:00' (timezone's; default: all)",
    ),
    Key(
        "callback_ignore",
        _const(()),
        parse_prefixes,
        "callbacks: E.164 prefixes whose missed calls open no task, e.g. +41800",
    ),
    Key(
        "callback_max_attempts",
        _const(3),
        at_least(int, 1),
        "callbacks: dials that went out unanswered before a task closes as unreached",
    ),
    Key(
        "callback_assign",
        _const("manual"),
        parse_assign,
        "callbacks: auto gives each open task to an idle desk, round robin (manual: callbacks assign)",
    ),
    Key(
        "wallboard_dial_token",
        _const(None),
        parse_optional_text,
        "wallboard: a second token whose holders see the Call back button (never the read-only token)",
    ),
    Key(
        "callback_dial_url",
        _const(None),
        parse_optional_text,
        "wallboard: broker URL with the tcx-dialer user's password, for Call back (default: amqp_url)",
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


def options_of(settings: Settings) -> CallbackOptions:
    """The callbacks options loaded with settings (defaults where the section was not loaded)."""
    found = getattr(settings, "options", {}).get("callbacks")
    return found if isinstance(found, CallbackOptions) else CallbackOptions()
