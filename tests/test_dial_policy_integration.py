"""The dial policy on a running desk agent: refused numbers and the rate are `rejected` results (issue 19)."""

from __future__ import annotations

import json

import pytest

from bridge.config import Settings
from bridge.dial import request_dial
from bridge.transport import Broker
from tests.conftest import FakeAssistant, Service, Tap, desk_queue, start_service

pytestmark = pytest.mark.integration


def results_of(results: Tap, count: int) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    while len(found) < count:
        delivery = results.get(timeout=15)
        assert delivery is not None, f"only {len(found)} of {count} results: {found}"
        body = json.loads(delivery.body)
        found[str(body["request_id"])] = body
    return found


def test_premium_rate_and_the_rate_limit_are_rejected_with_the_reason(
    agent_env: dict[str, str],
    broker: Broker,
    settings: Settings,
    services: list[Service],
    results: Tap,
    fake_assistant: FakeAssistant,
) -> None:
    env = {**agent_env, "TCX_BRIDGE_DIAL_RATE": "2/min", "TCX_BRIDGE_DIAL_DENY": "+4179"}
    start_service(services, env, broker, desk_queue(settings), "agent")
    for request_id, number in (
        ("premium", "0901 123 456"),
        ("denied", "079 123 45 67"),
        ("first", "044 123 45 67"),
        ("second", "044 123 45 68"),
        ("third", "044 123 45 69"),
    ):
        request_dial(settings, number, desk=settings.desk, broker=broker, request_id=request_id)
    found = results_of(results, 5)
    assert {key: value["status"] for key, value in found.items()} == {
        "premium": "rejected",
        "denied": "rejected",
        "first": "dialed",
        "second": "dialed",
        "third": "rejected",
    }
    assert found["premium"]["reason"] == (
        "policy: +41901123456 is a PREMIUM_RATE number, which dial_deny_types refuses"
    )
    assert found["denied"]["reason"] == "policy: +41791234567 starts with +4179, which dial_deny refuses"
    assert str(found["third"]["reason"]).startswith("rate: this desk dialed 2 numbers in the last 60s")
    assert fake_assistant.calls() == [["-cmd", "makecall:0441234567"], ["-cmd", "makecall:0441234568"]]
