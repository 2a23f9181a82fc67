"""The launch parser: every line of the seed, the tolerant forms, and what is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import LaunchError
from bridge.launch import parse_launch

SEED = [
    # (argv, kind, direction, call_id, caller_id)
    (["/N:S", "/C:0791234567", "/T:I", "/I:1001"], "started", "inbound", "1001", "0791234567"),
    (["/N:C", "/T:I", "/I:1001"], "connected", "inbound", "1001", None),
    (["/N:E", "/T:I", "/I:1001"], "ended", "inbound", "1001", None),
    (["/N:S", "/T:O", "/I:0441234567"], "started", "outbound", "0441234567", None),
    (["/N:C", "/T:O", "/I:0441234567"], "connected", "outbound", "0441234567", None),
    (["/N:E", "/T:O", "/I:0441234567"], "ended", "outbound", "0441234567", None),
]


TOLERANT = [
    # lower-case letters and values
    (["/n:s", "/c:0791234567", "/t:i", "/i:77"], "started", "inbound", "77", "0791234567"),
    # dash instead of slash
    (["-N:E", "-T:O", "-I:77"], "ended", "outbound", "77", None),
    # any order
    (["/I:77", "/T:I", "/N:C"], "connected", "inbound", "77", None),
    # a caller name with spaces and non-ASCII characters, one argv item
    (["/N:S", "/C:Zoë Müller-Šimić", "/T:I", "/I:77"], "started", "inbound", "77", "Zoë Müller-Šimić"),
    # an unknown option and a stray word are ignored
    (["/N:S", "/X:whatever", "stray", "/C:123", "/T:I", "/I:77"], "started", "inbound", "77", "123"),
    # no /T on a connected event: direction unknown
    (["/N:C", "/I:77"], "connected", "unknown", "77", None),
    # a repeated option: the last wins
    (["/N:S", "/N:E", "/T:I", "/I:77"], "ended", "inbound", "77", None),
    # call id with spaces around it is trimmed
    (["/N:E", "/T:I", "/I: 77 "], "ended", "inbound", "77", None),
    # outbound S carries no caller id (the seed's own example)
    (["/N:S", "/T:O", "/I:0441234567"], "started", "outbound", "0441234567", None),
]


@pytest.mark.parametrize(("argv", "kind", "direction", "call_id", "caller_id"), SEED + TOLERANT)
def test_launches(argv: list[str], kind: str, direction: str, call_id: str, caller_id: str | None) -> None:
    launch = parse_launch(argv)
    assert (launch.kind, launch.direction, launch.call_id, launch.caller_id) == (
        kind,
        direction,
        call_id,
        caller_id,
    )


@pytest.mark.parametrize("argv", [case[0] for case in SEED])
def test_seed_launches_have_no_warnings(argv: list[str]) -> None:
    assert parse_launch(argv).warnings == ()


def test_empty_caller_id_is_anonymous() -> None:
    launch = parse_launch(["/N:S", "/C:", "/T:I", "/I:9"])
    assert launch.caller_id == ""
    assert launch.anonymous


def test_known_caller_is_not_anonymous() -> None:
    assert not parse_launch(["/N:S", "/C:123", "/T:I", "/I:9"]).anonymous


def test_unknown_call_type_warns_and_keeps_the_event() -> None:
    launch = parse_launch(["/N:E", "/T:X", "/I:9"])
    assert launch.direction == "unknown"
    assert launch.warnings == ("unknown call type /T:'X'; expected I or O",)


INVALID = [
    ([], "no arguments were given; expected /N:S|C|E [/C:CallerId] [/T:I|O] /I:CallId"),
    (
        ["/T:I", "/I:5"],
        "no notification type /N: in ['/T:I', '/I:5']; expected /N:S|C|E [/C:CallerId] [/T:I|O] /I:CallId",
    ),
    (["/N:Q", "/T:I", "/I:5"], "unknown notification type /N:'Q'; expected S, C or E"),
    (
        ["/N:S", "/C:1", "/T:I"],
        "no call id /I: in ['/N:S', '/C:1', '/T:I']; expected /N:S|C|E [/C:CallerId] [/T:I|O] /I:CallId",
    ),
    # an empty call id is no call id
    (
        ["/N:E", "/T:I", "/I:"],
        "no call id /I: in ['/N:E', '/T:I', '/I:']; expected /N:S|C|E [/C:CallerId] [/T:I|O] /I:CallId",
    ),
]


@pytest.mark.parametrize(("argv", "message"), INVALID)
def test_invalid_launches_say_what_is_wrong(argv: list[str], message: str) -> None:
    with pytest.raises(LaunchError) as caught:
        parse_launch(argv)
    assert str(caught.value) == message


@given(st.lists(st.text(max_size=30), max_size=8))
def test_arbitrary_argv_raises_only_launch_error(argv: list[str]) -> None:
    try:
        launch = parse_launch(argv)
    except LaunchError:
        return
    assert launch.kind in ("started", "connected", "ended")
    assert launch.call_id
    assert launch.call_id == launch.call_id.strip()


option = st.builds(
    lambda dash, letter, value: f"{dash}{letter}:{value}",
    st.sampled_from("/-"),
    st.sampled_from("NCTIncti"),
    st.text(max_size=12),
)


@given(st.lists(option | st.text(max_size=12), max_size=8))
def test_option_shaped_argv_raises_only_launch_error(argv: list[str]) -> None:
    """Option-shaped input reaches the deeper branches that plain text rarely does."""
    try:
        parse_launch(argv)
    except LaunchError as error:
        message = str(error)
    else:
        return
    assert message
