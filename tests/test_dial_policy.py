"""The desk's dial policy: premium rate per region, allow and deny prefixes, the rate (issue 19)."""

from __future__ import annotations

import pytest

from bridge.config import load_settings
from bridge.errors import ConfigError, DialError
from consumers.agent.dial_policy import DialPolicy


def policy(**settings: str) -> DialPolicy:
    environ = {f"TCX_BRIDGE_{name.upper()}": value for name, value in settings.items()}
    return DialPolicy.of(load_settings(environ={"XDG_CONFIG_HOME": "/nonexistent", **environ}).settings)


@pytest.mark.parametrize(
    ("region", "number"),
    [
        ("CH", "0901 123 456"),  # Swiss 090x business numbers
        ("CH", "+41 906 123 456"),
        ("GB", "0906 123 4567"),  # UK 09 premium rate
        ("GB", "+44 909 876 5432"),
        ("US", "+1 900 555 0100"),  # North American 900
        ("CH", "001 900 555 0100"),  # the same written with 00 from Switzerland
        ("DE", "0900 1 234567"),
    ],
)
def test_premium_rate_numbers_are_refused_by_default(region: str, number: str) -> None:
    with pytest.raises(
        DialError, match=r"^policy: \+\d+ is a PREMIUM_RATE number, which dial_deny_types refuses$"
    ):
        policy(region=region).check(number)


@pytest.mark.parametrize(
    ("region", "number"),
    [
        ("CH", "044 123 45 67"),  # fixed line
        ("CH", "+41 79 123 45 67"),  # mobile
        ("CH", "0800 123 456"),  # toll free is allowed unless configured
        ("GB", "020 7946 0018"),
        ("CH", "101"),  # an internal extension
        ("CH", "*70"),  # a service code the PBX knows
    ],
)
def test_ordinary_numbers_are_dialed(region: str, number: str) -> None:
    policy(region=region).check(number)


def test_types_allow_and_deny_prefixes() -> None:
    strict = policy(dial_deny_types="PREMIUM_RATE,TOLL_FREE,SHARED_COST")
    with pytest.raises(DialError, match="TOLL_FREE"):
        strict.check("0800 123 456")
    only_home = policy(dial_allow="+41, 0049")  # 00 is read as +
    only_home.check("044 123 45 67")
    only_home.check("+49 30 1234567")
    with pytest.raises(DialError, match=r"^policy: \+33142685300 is in none of the prefixes of dial_allow$"):
        only_home.check("+33 1 42 68 53 00")
    with pytest.raises(DialError, match="not a phone number in any prefix of dial_allow"):
        only_home.check("*70")
    with pytest.raises(DialError, match="PREMIUM_RATE"):  # a country allowed: its premium rate still is not
        only_home.check("0901 123 456")
    denied = policy(dial_deny="+4179")
    with pytest.raises(
        DialError, match=r"^policy: \+41791234567 starts with \+4179, which dial_deny refuses$"
    ):
        denied.check("079 123 45 67")
    denied.check("078 123 45 67")


def test_the_longest_prefix_decides() -> None:
    """An allowed hotline inside a denied range, a denied range inside an allowed country."""
    mixed = policy(dial_allow="+41,+41901123456", dial_deny="+41901")
    mixed.check("0901 123 456")  # the hotline: its own allow prefix is longer than the deny
    with pytest.raises(DialError, match=r"starts with \+41901, which dial_deny refuses"):
        mixed.check("0901 654 321")
    mixed.check("044 123 45 67")


def test_the_rate() -> None:
    limited = policy(dial_rate="3/min")
    limited.check_rate(2)
    with pytest.raises(
        DialError, match=r"^rate: this desk dialed 3 numbers in the last 60s \(dial_rate 3 per 60s\)$"
    ):
        limited.check_rate(3)
    policy(dial_rate="0").check_rate(10_000)  # no limit


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"dial_deny_types": "PREMIUM"}, "dial_deny_types: 'PREMIUM' is not a number type; use some of "),
        (
            {"dial_allow": "+41x"},
            "TCX_BRIDGE_DIAL_ALLOW: '+41x' is not an E.164 prefix; use + and digits, e.g. +41900",
        ),
        (
            {"dial_rate": "fast"},
            "TCX_BRIDGE_DIAL_RATE: 'fast' is not a rate; give dials per minute like 20/min (0: no limit)",
        ),
    ],
)
def test_bad_policy_settings_are_one_line(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        policy(**settings)
    assert str(error.value).startswith(message)


def test_describe_says_what_is_in_force() -> None:
    assert policy(dial_allow="+41", dial_rate="10/hour").describe() == [
        "number types never dialed: PREMIUM_RATE",
        "prefixes allowed: +41",
        "prefixes denied: none",
        "rate: at most 10 dials per 3600s",
    ]
