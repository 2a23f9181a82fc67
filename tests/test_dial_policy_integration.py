"""The dial policy on a running desk agent: refused numbers and the rate are `rejected` results (issue 19)."""

from __future__ import annotations

import json

import pytest

from bridge.config import Settings
from bridge.dial import request_dial
from bridge.transport import Broker, OutgoingMessage
from tests.conftest import FakeAssistant, Service, Tap, desk_queue, run_cli, start_service
from tests.test_dialing_integration import dial_results

pytestmark = pytest.mark.integration


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
    found = dial_results(results, 5)
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


def test_a_dial_request_dead_lettered_unread_still_gets_a_result(
    agent: Service, broker: Broker, settings: Settings, results: Tap, fake_assistant: FakeAssistant
) -> None:
    """Over 64 KiB: dead-lettered as oversize before decoding, but its request_id is answered."""
    body = json.dumps({"request_id": "huge-1", "number": "044 123 45 67", "note": "x" * 70_000})
    message = OutgoingMessage(f"desk.{settings.desk}.dial", body.encode(), "huge-1", "dial", 0)
    broker.publish(settings.commands_exchange, message)
    result = dial_results(results, 1)["huge-1"]
    assert result["status"] == "rejected"
    assert str(result["reason"]).startswith("oversize: the body has 70")
    assert fake_assistant.calls() == []
    dead = broker.get(settings.dead_queue(f"desk.{settings.desk}"), timeout=10)
    assert dead is not None
    assert dead.headers["x-tcx-reason"].startswith("oversize")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--desk", "desk 7"],
            "Error: desk 'desk 7' holds ' ', not allowed in a desk id; use only A-Za-z0-9_-",
        ),
        (["--extension", "10.1"], "Error: extension '10.1' is not an extension; use digits like 101"),
    ],
)
def test_dial_refuses_a_desk_it_cannot_address(env: dict[str, str], argv: list[str], message: str) -> None:
    """Once silently reduced (desk7): the request would have gone to another desk's queue."""
    done = run_cli(env, "dial", *argv, "044 123 45 67")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == message
