"""Text made safe to show and to store."""

from __future__ import annotations

import pytest

from bridge.text import escape_undecodable, has_control, printable


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain 079 123", "plain 079 123"),
        ("\x1b[2J\x07", "\\x1b[2J\\x07"),
        ("\x00nul", "\\x00nul"),
        ("\u202eevil", "\\u202eevil"),
        # invisible but not control: shown, so that nothing hides in a value
        ("079\u200b123", "079\\u200b123"),
        ("\ufeffbom", "\\ufeffbom"),
        ("soft\xadhyphen", "soft\\xadhyphen"),
        ("\udcff", "\\udcff"),  # a lone surrogate
        ("Zoë 😀", "Zoë 😀"),  # letters and emoji are printable
    ],
)
def test_printable(value: str, shown: str) -> None:
    assert printable(value) == shown


def test_zero_width_characters_are_shown_but_do_not_make_an_id_invalid() -> None:
    assert not has_control("079\u200b123")
    assert has_control("079\u202e123")


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("/C:\udcff", "/C:\\xff"),
        ("a\udc80b\udcc3", "a\\x80b\\xc3"),
        ("\ud800", "\\ud800"),  # not from a byte: a UTF-16 half
        ("fine\u200b\x00", "fine\u200b\x00"),  # only what cannot be encoded is escaped here
    ],
)
def test_escape_undecodable(value: str, stored: str) -> None:
    assert escape_undecodable(value) == stored
    escape_undecodable(value).encode()
