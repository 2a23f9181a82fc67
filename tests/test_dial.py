"""Dial number validation, routing keys, popup command templates."""

from __future__ import annotations

import pytest

from bridge.dial import clean_number, dial_routing_key, new_request
from bridge.errors import DialError, HandlerError
from consumers.agent.popup import is_web_url, popup_argv, popup_refusal

CHARS = (
    "has characters other than digits, * and # (and a leading +); "
    "only spaces, dashes, dots, slashes and parentheses may separate digits"
)


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("0441234567", "0441234567"),
        ("+41 44 123 45 67", "+41441234567"),
        ("(044) 123-45.67", "0441234567"),
        ("*21#", "*21#"),  # feature codes pass as given
        ("101", "101"),  # an internal extension
        ("0041441234567", "0041441234567"),  # no E.164 rewriting: the PBX decides
    ],
)
def test_clean_number_removes_only_separators(raw: str, number: str) -> None:
    assert clean_number(raw) == number


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("123;touch x", f"number '123;touch x' {CHARS}"),
        ("$(id)", f"number '$(id)' {CHARS}"),
        ("12 && calc", f"number '12 && calc' {CHARS}"),
        ("12\n34", f"number '12\\n34' {CHARS}"),
        ("1" * 200, f"number '{'1' * 40}'... has more than 32 digits"),
        ("", "number '' is empty; give digits like +41441234567"),
        ("1+2", f"number '1+2' {CHARS}"),  # + only in front
        ("١٢٣", f"number '١٢٣' {CHARS}"),  # non-ASCII digits are not digits for the PBX
        ("12\t34", f"number '12\\t34' {CHARS}"),  # a tab is not a visual separator
    ],
)
def test_hostile_numbers_are_rejected_with_the_value(raw: str, message: str) -> None:
    with pytest.raises(DialError) as caught:
        clean_number(raw)
    assert str(caught.value) == message


def test_routing_keys() -> None:
    assert dial_routing_key("DESK-07", None) == "desk.DESK-07.dial"
    assert dial_routing_key(None, "107") == "ext.107.dial"
    with pytest.raises(DialError, match="give a desk or an extension"):
        dial_routing_key(None, None)


def test_new_request_rejects_a_bad_number_before_publishing() -> None:
    with pytest.raises(DialError):
        new_request("12;rm -rf /")


def test_new_request_sets_expiry_from_ttl() -> None:
    request = new_request("123", ttl=60)
    assert request.expires_at is not None
    assert request.expires_at.endswith("Z")


def test_popup_template_values_never_become_new_words() -> None:
    argv = popup_argv("crm-open --name {name} {url}", {"name": "Bob; rm -rf / $(id)", "url": "https://x/1"})
    assert argv == ["crm-open", "--name", "Bob; rm -rf / $(id)", "https://x/1"]


def test_popup_template_with_unknown_field_is_a_handler_error() -> None:
    with pytest.raises(HandlerError, match="not a usable template"):
        popup_argv("open {nope}", {"url": ""})


def test_popup_template_cannot_take_its_program_from_a_value() -> None:
    with pytest.raises(HandlerError, match="first word must name the program"):
        popup_argv("{url} --x", {"url": "https://x/1"})


POP = {"url": "https://crm.example.com/c/1", "name": "Anna", "number": "0791234567", "e164": "+41791234567"}


@pytest.mark.parametrize(
    ("template", "values", "refused"),
    [
        ("crm-open {url}", {}, None),
        (
            "crm-open {number}",
            {"number": "--output=owned.txt"},
            "{number} '--output=owned.txt' would start an",
        ),
        ("crm-open {name} {number}", {"name": "-rf"}, "{name} '-rf' would start an option (word 2)"),
        ("crm-open {name}{number}", {"name": "", "number": "-x"}, "would start an option"),  # empty name
        ("crm-open -- {number} {name}", {"number": "--output=owned.txt", "name": "-rf"}, None),
        ("crm-open --number={number}", {"number": "--output=owned.txt"}, None),  # an option's value
        ("crm-open --number {number}", {"number": "-1"}, "would start an option"),
        ("crm-open x{number}", {"number": "-1"}, None),  # the word begins with the template's x
        ("crm-open {e164} {number}", {"number": "+41 (0)44 123-45.67"}, None),  # phone numbers, not options
        ("less {name}", {"name": "+!calc"}, "{name} '+!calc' would start an option"),  # less runs +!cmd
        (
            "crm-open -- {url}",
            {"url": "file:///etc/passwd"},
            "{url} 'file:///etc/passwd' is not an http(s) URL",
        ),
        ("crm-open {url}", {"url": "C:\\Windows\\System32\\calc.exe"}, "is not an http(s) URL"),
        ("crm-open {url!s}", {"url": "javascript:alert(1)"}, "is not an http(s) URL"),
        ("crm-open {name}", {"url": "file:///etc/passwd"}, None),  # the URL is not passed: nothing to check
        ("crm-open {name}", {"name": "/output:owned.txt"}, None),  # on POSIX a path, not a switch
    ],
)
def test_popup_values_never_become_options(
    template: str, values: dict[str, str], refused: str | None
) -> None:
    found = popup_refusal(template, {**POP, **values}, windows=False)
    if refused is None:
        assert found is None
    else:
        assert found is not None
        assert refused in found


@pytest.mark.parametrize(
    ("template", "values", "refused"),
    [
        ("crm.exe -- {name}", {"name": "/output:owned.txt"}, "would start an option"),  # -- is no help there
        ("crm.exe /name:{name}", {"name": "/x"}, None),  # the template's own switch
        ("pop.cmd {name}", {"name": "Weber & Co"}, "holds characters cmd.exe would act on"),
        ("pop.BAT {name}", {"name": '"x" ^calc'}, "holds characters cmd.exe would act on"),
        ("pop.cmd {name}", {"name": "Anna Muster"}, None),
        ("pop.exe {name}", {"name": "Weber & Co"}, None),  # no cmd.exe in between
    ],
)
def test_popup_refusals_on_windows(template: str, values: dict[str, str], refused: str | None) -> None:
    found = popup_refusal(template, {**POP, **values}, windows=True)
    assert (found is None) if refused is None else (found is not None and refused in found)


@pytest.mark.parametrize(
    ("url", "opened"),
    [
        ("https://crm.example.com/contacts/1", True),
        ("HTTP://crm/1", True),
        ("C:\\Windows\\System32\\calc.exe", False),  # os.startfile would run it
        ("file:///etc/passwd", False),
        ("javascript:alert(1)", False),
        ("https://", False),  # no host
    ],
)
def test_only_web_urls_are_opened(url: str, opened: bool) -> None:
    assert is_web_url(url) is opened
