"""Caller id normalisation: national, international, separators, internal, anonymous."""

from __future__ import annotations

import pytest

from consumers.numbers import normalise


@pytest.mark.parametrize(
    ("raw", "region", "kind", "e164"),
    [
        ("0791234567", "CH", "external", "+41791234567"),  # national, default region
        ("+41791234567", "CH", "external", "+41791234567"),
        ("0041791234567", "CH", "external", "+41791234567"),  # international with 00
        ("079 123 45 67", "CH", "external", "+41791234567"),  # spaces
        ("079-123-45-67", "CH", "external", "+41791234567"),  # dashes
        ("(044) 123 45 67", "CH", "external", "+41441234567"),  # parentheses
        ("+49 30 1234567", "CH", "external", "+49301234567"),  # foreign number, international form
        ("030 1234567", "DE", "external", "+49301234567"),  # national in another region
        ("(212) 555-0123", "US", "external", "+12125550123"),
        ("101", "CH", "internal", None),  # internal extension
        ("4711", "CH", "internal", None),
        ("", "CH", "anonymous", None),  # the Assistant's empty /C:
        (None, "CH", "anonymous", None),
        ("Anonymous", "CH", "anonymous", None),
        ("  ", "CH", "anonymous", None),
        ("hello", "CH", "invalid", None),
        ("12", "CH", "internal", None),
    ],
)
def test_normalise(raw: str | None, region: str, kind: str, e164: str | None) -> None:
    number = normalise(raw, region)
    assert (number.kind, number.e164) == (kind, e164)
    assert number.raw == raw
