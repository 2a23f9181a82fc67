"""Dialing as CRM servers in other languages do it: their timestamps, their numbers, and confirmation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pika
import pytest

from bridge.config import Settings
from bridge.schema import json_schemas
from bridge.transport import Broker
from tests.conftest import (
    FakeAssistant,
    Service,
    Tap,
    desk_queue,
    publish_raw,
    run_cli,
    start_service,
    wait_until,
)

pytestmark = pytest.mark.integration


def spellings(moment: datetime) -> dict[str, str]:
    """One moment as other languages' standard libraries write it."""
    utc = moment.astimezone(UTC)
    return {
        "javascript toISOString": utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z",
        "java Instant": utc.strftime("%Y-%m-%dT%H:%M:%SZ"),  # whole seconds print no fraction
        ".NET o": utc.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z",  # 7 digits
        "go RFC3339Nano": utc.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z",  # 9 digits
        "python isoformat": utc.isoformat(),  # +00:00
        "offset +01:00": (utc + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "+01:00",
        "space instead of T": utc.strftime("%Y-%m-%d %H:%M:%S.%fZ"),
    }


def dial_results(results: Tap, count: int) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    while len(found) < count:
        delivery = results.get(timeout=15)
        assert delivery is not None, f"only {len(found)} of {count} results"
        body = json.loads(delivery.body)
        found[str(body["request_id"])] = body
    return found


def test_every_languages_timestamps_validate_against_the_exported_schema() -> None:
    schema = json_schemas()
    request_schema = {**schema["$defs"]["DialRequest"], "$defs": schema["$defs"]}
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    assert "date-time" in checker.checkers  # rfc3339-validator is installed: formats are checked
    validator = jsonschema.Draft202012Validator(request_schema, format_checker=checker)
    for name, stamp in spellings(datetime.now(UTC)).items():
        if name == "space instead of T":
            continue  # RFC 3339 allows it in a note, but format checkers follow the ABNF; our decoders accept it
        document = {"request_id": "r", "number": "123", "expires_at": stamp}  # no type: not required
        assert not list(validator.iter_errors(document)), name
    assert list(validator.iter_errors({"request_id": "r", "number": "1", "expires_at": "yesterday"}))


def test_every_languages_timestamps_are_dialed_or_expired_never_dead_lettered(
    agent: Service, plain: object, settings: Settings, results: Tap, broker: Broker
) -> None:
    future, past = datetime.now(UTC) + timedelta(hours=1), datetime.now(UTC) - timedelta(hours=1)
    sent = {}
    for when, stamps in (("future", spellings(future)), ("past", spellings(past))):
        for name, stamp in stamps.items():
            request_id = f"{when}-{name}".replace(" ", "-")
            sent[request_id] = "dialed" if when == "future" else "expired"
            publish_raw(
                plain,
                settings,
                {"request_id": request_id, "number": "123", "expires_at": stamp},
                f"desk.{settings.desk}.dial",
            )
    publish_raw(
        plain,
        settings,
        {"request_id": "feb30", "number": "123", "expires_at": "2030-02-30T10:00:00Z"},
        f"desk.{settings.desk}.dial",
    )
    found = dial_results(results, len(sent) + 1)
    assert {request_id: found[request_id]["status"] for request_id in sent} == sent
    assert found["feb30"]["status"] == "rejected"
    assert "not a possible date-time" in str(found["feb30"]["reason"])
    assert broker.queue_info(settings.dead_queue(f"desk.{settings.desk}")) == (0, 0)


def test_an_undecodable_request_with_a_request_id_gets_rejected(
    agent: Service, plain: object, settings: Settings, results: Tap, fake_assistant: FakeAssistant
) -> None:
    publish_raw(
        plain, settings, {"request_id": "no-number", "requested_by": "crm-7"}, f"desk.{settings.desk}.dial"
    )
    publish_raw(plain, settings, {"request_id": "typed", "number": 41791234567}, f"desk.{settings.desk}.dial")
    found = dial_results(results, 2)
    assert found["no-number"]["status"] == "rejected"
    assert "missing required field `number`" in str(found["no-number"]["reason"])
    assert found["typed"]["status"] == "rejected"
    assert "Expected `str`, got `int`" in str(found["typed"]["reason"])
    assert fake_assistant.calls() == []
    assert "no-number" in agent.output()


# every request whose request_id can be read gets one result, whatever else is wrong with it
BROKEN = [
    # a possible date whose UTC time is past year 9999 (Python's OverflowError)
    ('"number": "123", "expires_at": "9999-12-31T23:59:59-23:59"', "123", "out of the range of dates"),
    ('"number": 1e400', "1e400", "Number out of range"),
    ('"number": ' + "1" * 5000, "1" * 63 + "…", "Number out of range"),  # the number is cut to 64
    ('"number": "' + "1" * 5000 + '"', "1" * 63 + "…", "Expected `str` of length <= 64"),
    ('"number": ["123"], "requested_by": 5', '["123"]', "Expected `str`, got `array`"),
    ('"number": "123", "expires_at": 1700000000', "123", "Expected `str | null`, got `int`"),
    ('"number": "123", "type": "popup"', "123", "Invalid value 'popup'"),
    # a lone surrogate escape: msgspec refuses the whole document, Python's json reads the id
    ('"number": "123", "requested_by": "\\udcff"', "123", "invalid utf-16 surrogate"),
]


def test_every_readable_request_id_gets_one_result(
    agent: Service,
    plain: object,
    settings: Settings,
    results: Tap,
    broker: Broker,
    fake_assistant: FakeAssistant,
) -> None:
    for n, (fields, _, _) in enumerate(BROKEN):
        plain.basic_publish(  # type: ignore[attr-defined]
            settings.commands_exchange,
            f"desk.{settings.desk}.dial",
            f'{{"request_id": "broken-{n}", {fields}}}'.encode(),
            pika.BasicProperties(content_type="application/json", delivery_mode=2, user_id="guest"),
        )
    found = dial_results(results, len(BROKEN))
    for n, (_, number, reason) in enumerate(BROKEN):
        result = found[f"broken-{n}"]
        assert (result["status"], result["number"]) == ("rejected", number), n
        assert reason in str(result["reason"]), n
    assert results.get(timeout=1) is None  # one result each
    assert fake_assistant.calls() == []
    assert broker.queue_info(settings.dead_queue(f"desk.{settings.desk}")) == (0, 0)


NUMBERS = [
    ("+41 (0)41 740 35 36", "+41417403536"),  # Swiss business card: the (0) is the trunk zero
    ("+49 (0) 30 1234567", "+49301234567"),
    ("0041 (0)41 740 35 36", "0041417403536"),
    ("(041) 740 35 36", "0417403536"),
    ("041/740 35 36", "0417403536"),  # slash as a separator, common in German-speaking CRMs
    ("+44 (0)20 7946 0000", "+442079460000"),
    ("tel:+41417403536", "+41417403536"),  # RFC 3966
    ("044 123-45-67", "0441234567"),
]
HOSTILE = ["123;touch x", "$(id)", "12 && calc", "12\n34", "tel:+41;ext=1", "+41 (0)41 x"]


def test_numbers_as_crms_write_them_dial_exactly_the_number_meant(
    agent: Service, plain: object, settings: Settings, results: Tap, fake_assistant: FakeAssistant
) -> None:
    for n, (written, _) in enumerate(NUMBERS):
        publish_raw(plain, settings, {"request_id": f"n{n}", "number": written}, f"desk.{settings.desk}.dial")
    for n, written in enumerate(HOSTILE):
        publish_raw(plain, settings, {"request_id": f"h{n}", "number": written}, f"desk.{settings.desk}.dial")
    found = dial_results(results, len(NUMBERS) + len(HOSTILE))
    assert [found[f"n{n}"]["status"] for n in range(len(NUMBERS))] == ["dialed"] * len(NUMBERS)
    assert [found[f"h{n}"]["status"] for n in range(len(HOSTILE))] == ["rejected"] * len(HOSTILE)
    assert fake_assistant.calls() == [["-cmd", f"makecall:{dialed}"] for _, dialed in NUMBERS]


def test_no_assistant_process_means_failed_and_nothing_run(
    agent_env: dict[str, str],
    broker: Broker,
    settings: Settings,
    services: list[Service],
    plain: object,
    results: Tap,
    fake_assistant: FakeAssistant,
) -> None:
    env = {**agent_env, "TCX_BRIDGE_ASSISTANT_PROCESS": f"no-such-assistant-{uuid.uuid4().hex[:6]}.exe"}
    start_service(services, env, broker, desk_queue(settings), "agent")
    publish_raw(plain, settings, {"request_id": "closed", "number": "123"}, f"desk.{settings.desk}.dial")
    body = dial_results(results, 1)["closed"]
    assert (body["status"], body["reason"]) == ("failed", "3CX Assistant is not running on this desk")
    assert fake_assistant.calls() == []


def installed(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed next to {sys.executable}"
    return found


@pytest.fixture
def reporting_env(agent_env: dict[str, str]) -> dict[str, str]:
    """The stand-in Assistant that, like the real one, reports the outbound call through notify."""
    return {**agent_env, "TCX_BRIDGE_ASSISTANT": installed("tcx-bridge-fake-assistant")}


def test_the_assistants_own_events_confirm_a_dial(
    reporting_env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    start_service(services, reporting_env, broker, desk_queue(settings), "agent")
    done = run_cli(
        reporting_env, "dial", "+41 (0)44 123 45 67", "--requested-by", "crm-3", "--wait", timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-2] == f"dialed +41441234567 on {settings.desk}"
    assert lines[-1] == f"confirmed +41441234567 on {settings.desk} (call id +41441234567)"


def test_confirmed_result_carries_call_id_requested_by_and_extension(
    reporting_env: dict[str, str], broker: Broker, settings: Settings, services: list[Service], results: Tap
) -> None:
    start_service(services, reporting_env, broker, desk_queue(settings), "agent")
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        publish_raw(
            connection.channel(),
            settings,
            {"request_id": "c1", "number": "0441234567", "requested_by": "crm-3"},
            f"desk.{settings.desk}.dial",
        )
    finally:
        connection.close()
    first = results.get(timeout=15)
    second = results.get(timeout=15)
    assert first is not None
    assert second is not None
    dialed, confirmed = json.loads(first.body), json.loads(second.body)
    assert (dialed["status"], dialed["confirm_within"]) == ("dialed", 20.0)
    assert second.routing_key == f"dial.confirmed.{settings.desk}"
    assert confirmed["call_id"] == "0441234567"
    assert (confirmed["requested_by"], confirmed["extension"]) == ("crm-3", "101")


def test_no_event_from_the_assistant_means_unconfirmed_and_wait_fails(
    agent_env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    env = {**agent_env, "TCX_BRIDGE_DIAL_CONFIRM_TIMEOUT": "2"}
    start_service(services, env, broker, desk_queue(settings), "agent")
    done = run_cli(env, "dial", "0441234567", "--wait", timeout=60)
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == f"dialed 0441234567 on {settings.desk}"
    assert done.stderr.strip().startswith(
        f"Error: unconfirmed 0441234567 on {settings.desk}: the 3CX Assistant reported no outbound call within 2s"
    )
    done = run_cli(env, "dial", "0441234567", "--wait", "dialed", timeout=60)
    assert done.returncode == 0, done.stderr  # --wait dialed: the Assistant ran, as before


def test_the_readme_node_example_runs_and_gets_confirmed(
    reporting_env: dict[str, str], broker: Broker, settings: Settings, services: list[Service], tmp_path: Path
) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("Node.js and npm are not installed here")
    example = Path(__file__).parent.parent / "examples" / "node"
    work = tmp_path / "node"
    shutil.copytree(example, work, ignore=shutil.ignore_patterns("node_modules"))
    installed_ok = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund"], cwd=work, capture_output=True, text=True, timeout=180
    )
    if installed_ok.returncode != 0:
        pytest.skip(f"npm cannot install amqplib here: {installed_ok.stderr.strip()[-200:]}")
    declared = run_cli(reporting_env, "topology", "declare", "--desk", settings.desk)  # as README's roll-out
    assert declared.returncode == 0, declared.stderr
    start_service(services, reporting_env, broker, desk_queue(settings), "agent")
    done = subprocess.run(
        [node, "dial.mjs", "+41 (0)44 123 45 67"],
        cwd=work,
        env={
            **os.environ,
            "AMQP_URL": settings.amqp_url.replace("/%2F", ""),
            "TCX_NAMESPACE": settings.namespace,
            "DESK": settings.desk,
        },
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("queued crm-")
    assert lines[-2:] == ["dialed +41441234567", "confirmed +41441234567 (call id +41441234567)"]


def test_the_readme_amqp_publish_line_gets_a_result(
    agent: Service, settings: Settings, results: Tap, fake_assistant: FakeAssistant
) -> None:
    tool = shutil.which("amqp-publish")
    if not tool:
        pytest.skip("amqp-publish (Debian's amqp-tools) is not installed here")
    body = '{"request_id": "crm-4711", "number": "+41 44 123 45 67"}'
    done = subprocess.run(
        [tool, "-u", settings.amqp_url.removesuffix("/%2F"), "-e", settings.commands_exchange,
         "-r", f"desk.{settings.desk}.dial", "-p", "-C", "application/json", "-b", body],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # amqp-publish cannot set user_id: the agent answers, and dials nothing the broker vouches for no one for
    result = dial_results(results, 1)["crm-4711"]
    assert result["status"] == "rejected"
    assert str(result["reason"]).startswith("spoofed: the message has no user_id")
    assert fake_assistant.calls() == []
    dead = settings.dead_queue(f"desk.{settings.desk}")
    wait_until(lambda: results.broker.queue_info(dead) == (1, 0))  # and it is dead-lettered as spoofed
