"""The desk agent against the real broker, with a fake 3CX Assistant that records its argv."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.events import format_time
from bridge.outbox import Outbox
from bridge.topology import declare_commands
from bridge.transport import Broker
from tests.conftest import (
    FakeAssistant,
    Service,
    Tap,
    desk_queue,
    publish_raw,
    run_cli,
    run_notify,
    start_service,
    wait_until,
)

pytestmark = pytest.mark.integration


def result_for(results: Tap, request_id: str) -> dict[str, object]:
    delivery = results.get(timeout=15)
    assert delivery is not None, "no dial result"
    body = json.loads(delivery.body)
    assert body["request_id"] == request_id
    assert delivery.routing_key == f"dial.{body['status']}.{body['desk']}"
    return body


def test_plain_pika_request_runs_exactly_makecall(
    agent: Service, plain: object, settings: Settings, results: Tap, fake_assistant: FakeAssistant
) -> None:
    publish_raw(
        plain, settings, {"request_id": "r1", "number": "+41 44 123-45-67"}, f"desk.{settings.desk}.dial"
    )
    body = result_for(results, "r1")
    assert body["status"] == "dialed"
    assert body["number"] == "+41441234567"
    assert body["desk"] == settings.desk
    assert fake_assistant.calls() == [["-cmd", "makecall:+41441234567"]]


@pytest.mark.parametrize("number", ["123;touch x", "$(id)", "12 && calc", "12\n34", "1" * 200, ""])
def test_hostile_numbers_never_run_anything(
    agent: Service,
    plain: object,
    settings: Settings,
    results: Tap,
    fake_assistant: FakeAssistant,
    number: str,
) -> None:
    request_id = uuid.uuid4().hex
    publish_raw(plain, settings, {"request_id": request_id, "number": number}, f"desk.{settings.desk}.dial")
    body = result_for(results, request_id)
    assert body["status"] == "rejected"
    assert body["reason"]
    assert fake_assistant.calls() == []


def test_expired_request_is_not_dialed(
    agent: Service, plain: object, settings: Settings, results: Tap, fake_assistant: FakeAssistant
) -> None:
    past = format_time(datetime.now(UTC) - timedelta(minutes=5))
    publish_raw(
        plain,
        settings,
        {"request_id": "old", "number": "123", "expires_at": past},
        f"desk.{settings.desk}.dial",
    )
    body = result_for(results, "old")
    assert body["status"] == "expired"
    assert fake_assistant.calls() == []


def test_same_request_twice_dials_once(
    agent: Service,
    plain: object,
    settings: Settings,
    results: Tap,
    fake_assistant: FakeAssistant,
    broker: Broker,
) -> None:
    for _ in range(2):
        publish_raw(plain, settings, {"request_id": "twice", "number": "555"}, f"desk.{settings.desk}.dial")
    assert result_for(results, "twice")["status"] == "dialed"
    wait_until(lambda: broker.queue_info(settings.queue(f"desk.{settings.desk}")) == (0, 1))
    wait_until(lambda: "outcome=duplicate" in agent.output())
    assert fake_assistant.calls() == [["-cmd", "makecall:555"]]


def test_sigkill_right_after_dialing_never_dials_again(
    agent_env: dict[str, str],
    broker: Broker,
    settings: Settings,
    results: Tap,
    plain: object,
    fake_assistant: FakeAssistant,
    services: list[Service],
) -> None:
    """The Assistant dials, then the agent dies before it can ack; the redelivery must not dial."""
    first = start_service(
        services, {**agent_env, "FAKE_ASSISTANT_MODE": "kill-agent"}, broker, desk_queue(settings), "agent"
    )
    publish_raw(plain, settings, {"request_id": "k1", "number": "777"}, f"desk.{settings.desk}.dial")
    assert first.process.wait(20) == -9
    assert fake_assistant.calls() == [["-cmd", "makecall:777"]]

    second = Service(agent_env, "agent")
    services.append(second)
    body = result_for(results, "k1")
    assert body["status"] == "failed"
    assert "not dialed again" in str(body["reason"])
    assert fake_assistant.calls() == [["-cmd", "makecall:777"]]


def test_failing_assistant_gives_failed_and_the_agent_goes_on(
    agent_env: dict[str, str],
    broker: Broker,
    settings: Settings,
    results: Tap,
    plain: object,
    services: list[Service],
) -> None:
    start_service(
        services, {**agent_env, "FAKE_ASSISTANT_MODE": "fail"}, broker, desk_queue(settings), "agent"
    )
    publish_raw(plain, settings, {"request_id": "f1", "number": "123"}, f"desk.{settings.desk}.dial")
    body = result_for(results, "f1")
    assert body["status"] == "failed"
    assert "exited with status 3: Assistant is not running" in str(body["reason"])
    publish_raw(plain, settings, {"request_id": "f2", "number": "456"}, f"desk.{settings.desk}.dial")
    assert result_for(results, "f2")["status"] == "failed"


def test_missing_assistant_gives_failed(
    agent_env: dict[str, str],
    broker: Broker,
    settings: Settings,
    results: Tap,
    plain: object,
    services: list[Service],
) -> None:
    start_service(
        services,
        {**agent_env, "TCX_BRIDGE_ASSISTANT": "/nonexistent/tcx.assistant.client.exe"},
        broker,
        desk_queue(settings),
        "agent",
    )
    publish_raw(plain, settings, {"request_id": "m1", "number": "123"}, f"desk.{settings.desk}.dial")
    body = result_for(results, "m1")
    assert body["status"] == "failed"
    assert "was not found" in str(body["reason"])


def test_dial_wait_succeeds_for_a_dialed_request(
    agent: Service, agent_env: dict[str, str], settings: Settings, fake_assistant: FakeAssistant
) -> None:
    done = run_cli(
        agent_env, "dial", "--desk", settings.desk, "044 123 45 67", "--ttl", "60", "--wait", "dialed"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"dialed 0441234567 on {settings.desk}"
    assert fake_assistant.calls() == [["-cmd", "makecall:0441234567"]]


def test_dial_wait_before_the_number_does_not_take_it_as_its_value(
    agent_env: dict[str, str],
    broker: Broker,
    settings: Settings,
    services: list[Service],
    fake_assistant: FakeAssistant,
) -> None:
    """`dial --desk D --wait NUMBER` (CRM scripts' form) waits for the confirmation; --wait-for dialed stops earlier."""
    env = {**agent_env, "TCX_BRIDGE_DIAL_CONFIRM_TIMEOUT": "1"}
    start_service(services, env, broker, desk_queue(settings), "agent")
    done = run_cli(env, "dial", "--desk", settings.desk, "--wait", "0417403540", timeout=60)
    assert done.stdout.splitlines()[-1] == f"dialed 0417403540 on {settings.desk}"
    assert done.returncode == 1  # the fake Assistant sends no call event: unconfirmed
    assert done.stderr.startswith(f"Error: unconfirmed 0417403540 on {settings.desk}")
    for spelling in (["--wait-for", "dialed"], ["--wait=dialed"], ["--wait", "dialed"]):
        done = run_cli(env, "dial", "--desk", settings.desk, *spelling, "0417403541", timeout=60)
        assert done.returncode == 0, (spelling, done.stderr)
        assert done.stdout.splitlines()[-1] == f"dialed 0417403541 on {settings.desk}"
    assert fake_assistant.calls() == [["-cmd", "makecall:0417403540"]] + [["-cmd", "makecall:0417403541"]] * 3


def test_dial_wait_fails_for_a_rejected_request_by_extension(
    agent: Service, agent_env: dict[str, str]
) -> None:
    """The agent also answers ext.<extension>.dial; a rejected dial exits non-zero."""
    done = run_cli(agent_env, "dial", "--extension", "101", "*21#", "--wait", "dialed")
    assert done.returncode == 0, done.stderr
    done = run_cli(agent_env, "dial", "--extension", "101", "0800 FLOWERS", "--wait")
    assert done.returncode == 1
    assert "Error: number '0800 FLOWERS' has characters other than digits" in done.stderr


def test_dial_to_a_desk_nobody_listens_for_is_an_error(
    env: dict[str, str], broker: Broker, settings: Settings
) -> None:
    declare_commands(broker, settings)
    done = run_cli(env, "dial", "--desk", "nobody-here", "123")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("Error: no desk agent listens for 'desk.nobody-here.dial'")


def test_popup_runs_the_command_template(
    agent_env: dict[str, str],
    broker: Broker,
    settings: Settings,
    plain: object,
    services: list[Service],
    tmp_path: Path,
) -> None:
    out = tmp_path / "popup.json"
    recorder = tmp_path / "recorder"
    recorder.write_text(
        f"#!{sys.executable}\nimport json, sys\nopen({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    recorder.chmod(0o755)
    start_service(
        services,
        {**agent_env, "TCX_BRIDGE_POPUP_COMMAND": f"{recorder} {{name}} {{e164}}"},
        broker,
        desk_queue(settings),
        "agent",
    )
    pop = {
        "type": "popup",
        "event_id": "p1",
        "call_id": "c1",
        "desk": settings.desk,
        "caller_id": "0791234567",
        "number_e164": "+41791234567",
        "contact": {"name": "Anna Muster; $(id)"},
        "occurred_at": format_time(datetime.now(UTC)),
    }
    publish_raw(plain, settings, pop, f"desk.{settings.desk}.popup")
    wait_until(lambda: out.exists() and out.read_text())
    assert json.loads(out.read_text()) == ["Anna Muster; $(id)", "+41791234567"]


def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A real command that appends its argv, one JSON line per run; and the file it writes."""
    out = tmp_path / "popups.jsonl"
    path = tmp_path / "recorder"
    path.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(out)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    path.chmod(0o755)
    return path, out


def pop_for(settings: Settings, caller_id: str, url: str) -> dict[str, object]:
    return {
        "type": "popup",
        "event_id": uuid.uuid4().hex,
        "call_id": uuid.uuid4().hex,
        "desk": settings.desk,
        "caller_id": caller_id,
        "number_e164": None,
        "contact": {"name": "Anna Muster", "url": url},
        "occurred_at": format_time(datetime.now(UTC)),
    }


def test_popup_command_values_never_become_options_nor_open_other_urls(
    agent_env: dict[str, str],
    broker: Broker,
    settings: Settings,
    plain: object,
    services: list[Service],
    tmp_path: Path,
) -> None:
    command, out = recorder(tmp_path)
    agent = start_service(
        services,
        {**agent_env, "TCX_BRIDGE_POPUP_COMMAND": f"{command} {{number}} {{url}}"},
        broker,
        desk_queue(settings),
        "agent",
    )
    key = f"desk.{settings.desk}.popup"
    publish_raw(plain, settings, pop_for(settings, "--output=owned.txt", "https://crm.example.com/c/1"), key)
    publish_raw(plain, settings, pop_for(settings, "0791234567", "file:///etc/passwd"), key)
    publish_raw(plain, settings, pop_for(settings, "0791234567", "https://crm.example.com/c/1"), key)
    wait_until(lambda: out.exists() and out.read_text())
    # the first two were handled before the third (one queue, in order): neither ran the command
    assert out.read_text().splitlines() == ['["0791234567", "https://crm.example.com/c/1"]']
    wait_until(lambda: agent.output().count("not running popup_command") == 2)
    assert "{number} '--output=owned.txt' would start an option (word 2)" in agent.output()
    assert "{url} 'file:///etc/passwd' is not an http(s) URL" in agent.output()
    assert not (tmp_path / "owned.txt").exists()


def test_popup_command_values_after_double_dash_are_operands(
    agent_env: dict[str, str],
    broker: Broker,
    settings: Settings,
    plain: object,
    services: list[Service],
    tmp_path: Path,
) -> None:
    command, out = recorder(tmp_path)
    start_service(
        services,
        {**agent_env, "TCX_BRIDGE_POPUP_COMMAND": f"{command} --caller={{number}} -- {{number}} {{url}}"},
        broker,
        desk_queue(settings),
        "agent",
    )
    pop = pop_for(settings, "--output=owned.txt", "https://crm.example.com/c/1")
    publish_raw(plain, settings, pop, f"desk.{settings.desk}.popup")
    wait_until(lambda: out.exists() and out.read_text())
    assert json.loads(out.read_text()) == [
        "--caller=--output=owned.txt",
        "--",
        "--output=owned.txt",
        "https://crm.example.com/c/1",
    ]


def test_agent_replays_the_notify_outbox(
    agent_env: dict[str, str], broker: Broker, settings: Settings, events_tap: Tap, services: list[Service]
) -> None:
    down = {
        **agent_env,
        "TCX_BRIDGE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F",
        "TCX_BRIDGE_PUBLISH_BUDGET": "0.2",
    }
    assert run_notify(down, "/N:S", "/C:1", "/T:I", "/I:kept").returncode == 0
    assert len(Outbox(settings.outbox_dir).paths()) == 1
    service = Service(agent_env, "agent")
    services.append(service)
    delivery = events_tap.get(timeout=15)
    assert delivery is not None
    assert json.loads(delivery.body)["call_id"] == "kept"
    wait_until(lambda: Outbox(settings.outbox_dir).paths() == [])


def test_sigterm_stops_the_agent_cleanly(agent: Service) -> None:
    assert agent.stop() == 0
    assert "stopped after" in agent.output()


def test_result_watch_skips_other_requests_results(broker: Broker, settings: Settings) -> None:
    """--wait keeps listening past results for other requests (its queue outlives each get)."""
    from bridge.dial import ResultWatch
    from bridge.events import ENCODER, DialResult, utc_now
    from bridge.transport import OutgoingMessage

    with ResultWatch(settings) as watch:
        for request_id in ("someone-else", "mine"):
            result = DialResult(
                request_id=request_id,
                desk=settings.desk,
                number="1",
                status="dialed",
                reason=None,
                occurred_at=utc_now(),
            )
            broker.publish(
                settings.exchange,
                OutgoingMessage(result.routing_key, ENCODER.encode(result), request_id, "dial.result", 0),
            )
        found = watch.wait("mine", timeout=10)
    assert found is not None
    assert found.request_id == "mine"
