"""The call records' shared rules (consumers.analytics.calls)."""

from __future__ import annotations

import pytest

from consumers.analytics.calls import other_party


@pytest.mark.parametrize(
    ("direction", "call_id", "caller_id", "expected"),
    [
        ("inbound", "17", "0791234567", "0791234567"),
        ("inbound", "17", "", ""),  # an anonymous caller (/C:) stays as given: the numbers module reads it
        ("inbound", "17", None, None),  # the start (with the caller) not seen yet: the call id is no number
        ("unknown", "17", "0791234567", "0791234567"),
        ("outbound", "0441234567", None, "0441234567"),  # 3CX makes the number dialed the call id
        ("outbound", "0441234567", "0447654321", "0447654321"),  # a caller id, where given, says it
    ],
)
def test_the_other_party_is_the_caller_else_the_number_dialed(
    direction: str, call_id: str, caller_id: str | None, expected: str | None
) -> None:
    record = {"direction": direction, "call_id": call_id, "caller_id": caller_id}
    assert other_party(record) == expected
