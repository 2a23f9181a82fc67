"""The desk's dial policy: which numbers the agent may dial, and how many a minute (toll fraud's limits).

A number is read in E.164 for the desk's region, then:

1. the longest ``dial_allow`` or ``dial_deny`` prefix it starts with decides: deny refuses it;
2. when ``dial_allow`` is set, a number in none of its prefixes is refused;
3. its type (phonenumbers': PREMIUM_RATE, SHARED_COST, ...) in ``dial_deny_types`` is refused
   (PREMIUM_RATE by default), unless the allow prefix that matched names a range inside a
   country (``+41901123456``, a hotline, while ``+41`` alone still refuses premium rate).

Internal extensions (short numbers without a leading 0), and numbers that cannot be read
as a phone number of the region (service codes), are left to the PBX unless ``dial_allow`` is
set; the rate applies to every dial. ``dial_rate`` (default 20/min) bounds the numbers a desk dials in a
sliding window, counted from the agent's own records of what it ran, so a restart forgets nothing.
A refusal is a ``rejected`` dial result whose reason says which rule refused it.
"""

from __future__ import annotations

from typing import NamedTuple

import phonenumbers

from bridge.config import Settings
from bridge.errors import ConfigError, DialError
from consumers.agent.settings import AGENT, parse_rate
from consumers.numbers import normalise

TYPES = {
    name: value
    for name, value in vars(phonenumbers.PhoneNumberType).items()
    if name.isupper() and isinstance(value, int)
}


class DialPolicy(NamedTuple):
    """The policy in force on one desk, parsed once from the settings."""

    region: str
    deny_types: frozenset[int]
    allow: tuple[str, ...]
    deny: tuple[str, ...]
    rate: int  # dials at most per window; 0: no limit
    window: float  # seconds

    @classmethod
    def of(cls, settings: Settings) -> DialPolicy:
        """The settings' policy; a number type phonenumbers does not know is a ConfigError."""
        options = AGENT.of(settings)
        for name in options.dial_deny_types:
            if name not in TYPES:
                raise ConfigError(
                    f"dial_deny_types: {name!r} is not a number type; use some of {', '.join(sorted(TYPES))}"
                )
        rate, window = parse_rate("dial_rate", options.dial_rate)
        return cls(
            settings.region,
            frozenset(TYPES[name] for name in options.dial_deny_types),
            options.dial_allow,
            options.dial_deny,
            rate,
            window,
        )

    def describe(self) -> list[str]:
        """The effective policy, a line per rule (doctor prints it)."""
        names = {value: name for name, value in TYPES.items()}
        types = ", ".join(sorted(names[value] for value in self.deny_types)) or "none"
        return [
            f"number types never dialed: {types}",
            f"prefixes allowed: {', '.join(self.allow) or 'any (no dial_allow)'}",
            f"prefixes denied: {', '.join(self.deny) or 'none'}",
            f"rate: at most {self.rate} dials per {self.window:g}s" if self.rate else "rate: no limit",
        ]

    def check(self, number: str) -> None:
        """DialError (the reason for the rejected result) unless this desk may dial number."""
        read = normalise(number, self.region)
        if read.kind == "internal":
            return
        if read.e164 is None:  # a service code or a number the region does not know: the PBX decides
            if self.allow:
                raise DialError(f"policy: {number!r} is not a phone number in any prefix of dial_allow")
            return
        parsed = phonenumbers.parse(read.e164)
        rules = [(prefix, "allow") for prefix in self.allow] + [(prefix, "deny") for prefix in self.deny]
        matching = sorted((p for p in rules if read.e164.startswith(p[0])), key=lambda p: len(p[0]))
        prefix, rule = matching[-1] if matching else ("", "")
        if rule == "deny":
            raise DialError(f"policy: {read.e164} starts with {prefix}, which dial_deny refuses")
        if self.allow and not rule:
            raise DialError(f"policy: {read.e164} is in none of the prefixes of dial_allow")
        if rule == "allow" and len(prefix) > len(str(parsed.country_code)) + 1:
            return  # a range inside a country, allowed by name: past the number types too
        kind = phonenumbers.number_type(parsed)
        if kind in self.deny_types:
            name = next(name for name, value in TYPES.items() if value == kind)
            raise DialError(f"policy: {read.e164} is a {name} number, which dial_deny_types refuses")

    def check_rate(self, dialed_recently: int) -> None:
        """DialError ``rate: ...`` when the desk dialed its allowance in the last window already."""
        if self.rate and dialed_recently >= self.rate:
            raise DialError(
                f"rate: this desk dialed {dialed_recently} numbers in the last {self.window:g}s "
                f"(dial_rate {self.rate} per {self.window:g}s)"
            )
