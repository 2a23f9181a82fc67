"""The desk agent's settings: the Assistant it dials with, its dial policy, screen pops and replays.

Registered in pyproject.toml (``tcx_bridge.settings``); read with ``AGENT.of(settings)``.
Their names are a public contract (TOML keys, ``TCX_BRIDGE_*`` variables): never rename one.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import msgspec

from bridge.errors import ConfigError
from bridge.keys import Key, const
from bridge.sections import Section
from bridge.values import at_least, parse_optional_text, parse_prefixes, parse_text, parse_words


def parse_number_types(name: str, value: Any) -> tuple[str, ...]:
    """phonenumbers' number types by name (checked against phonenumbers where the agent starts)."""
    found = tuple(word.upper().replace("-", "_") for word in parse_words(name, value))
    for word in found:
        if not re.fullmatch(r"[A-Z_]{3,30}", word):
            raise ConfigError(f"{name}: {word!r} is not a number type; use e.g. PREMIUM_RATE, SHARED_COST")
    return found


RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
RATE_UNITS |= {"h": 3600.0, "hour": 3600.0}


def parse_rate(name: str, value: Any) -> tuple[int, float]:
    """``20/min`` (also ``20``: per minute, ``100/hour``, ``0``: no limit) as (count, seconds)."""
    text = str(value).strip().lower().replace(" ", "")
    count, _, unit = text.partition("/")
    unit = unit.removeprefix("1").rstrip("s") if unit not in ("s", "m", "h") else unit
    if not count.isdigit() or (unit and unit not in RATE_UNITS):
        raise ConfigError(f"{name}: {value!r} is not a rate; give dials per minute like 20/min (0: no limit)")
    return int(count), RATE_UNITS[unit or "min"]


def parse_rate_text(name: str, value: Any) -> str:
    count, seconds = parse_rate(name, value)
    unit = {1.0: "s", 60.0: "min", 3600.0: "hour"}[seconds]
    return f"{count}/{unit}"


class AgentOptions(msgspec.Struct, frozen=True, kw_only=True):
    assistant: str
    assistant_timeout: float
    assistant_process: str | None
    dial_confirm_timeout: float
    popup_command: str | None
    replay_interval: float
    dial_deny_types: tuple[str, ...]
    dial_allow: tuple[str, ...]
    dial_deny: tuple[str, ...]
    dial_rate: str


AGENT = Section(
    "agent",
    (
        Key(
            "assistant", const("tcx.assistant.client.exe"), parse_text, "the 3CX Assistant client executable"
        ),
        Key(
            "assistant_timeout",
            const(15.0),
            at_least(float, 0.1),
            "seconds the Assistant may take to dial",
        ),
        Key(
            "assistant_process",
            const("tcx.assistant.client.exe" if sys.platform == "win32" else None),
            parse_optional_text,
            "process name that must be running before a dial (default on Windows: tcx.assistant.client.exe; "
            "elsewhere none: no check)",
        ),
        Key(
            "dial_confirm_timeout",
            const(20.0),
            at_least(float, 0.0),
            "seconds the agent waits for the Assistant's outbound call event to confirm a dial (0: off)",
        ),
        Key(
            "popup_command",
            const(None),
            parse_optional_text,
            "command template for screen pops, e.g. 'crm-open {url}' (default: open the URL in a browser)",
        ),
        Key(
            "replay_interval",
            const(30.0),
            at_least(float, 0.1),
            "seconds between the desk agent's outbox replays",
        ),
        Key(
            "dial_deny_types",
            const(("PREMIUM_RATE",)),
            parse_number_types,
            "agent: number types never dialed (phonenumbers' names: PREMIUM_RATE, SHARED_COST, ...)",
        ),
        Key("dial_allow", const(()), parse_prefixes, "agent: E.164 prefixes dialed; when set, only these"),
        Key(
            "dial_deny",
            const(()),
            parse_prefixes,
            "agent: E.164 prefixes never dialed (the longest match decides)",
        ),
        Key(
            "dial_rate",
            const("20/min"),
            parse_rate_text,
            "agent: dials a desk places at most, e.g. 20/min (0: no limit)",
        ),
    ),
    AgentOptions,
)
