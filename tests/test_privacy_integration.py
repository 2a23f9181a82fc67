"""Erasure and subject access end to end: a simulated day, then three numbers forgotten (issue 25).

Real broker, SQLite stores, the CRM and analytics consumers and a desk agent running.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge import events
from bridge.config import Settings
from bridge.transport import Broker, OutgoingMessage
from consumers.analytics.calls import apply_event
from consumers.privacy.forms import RUN_IN_TEXT, Forms, digits, find_in_text, forms_of
from consumers.store.core import open_sqlite
from tests.conftest import Service, desk_queue, free_port, run_cli, run_notify, start_service, wait_until

pytestmark = pytest.mark.integration

WITH_ZERO = "+41 (0)79 111 22 33"  # written with (0): stored, journaled, logged in full once
OUTBOXED = "044 555 66 77"  # only in the desk's outbox (the broker was away)
DEAD = "0031 20 555 1234"  # only in dead-letter queues (its event was unreadable)


def held_anywhere(data_dir: Path, forms: Forms) -> list[str]:
    """Every file of the data dir (stores, their WAL, outbox, logs, audit) that holds the number.

    A byte search: any run of digits and separators whose digits contain a form (in a
    SQLite page the next column's digits may follow the number without a separator).
    """
    found = []
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_bytes().decode("latin-1")
        runs = (digits(match.group()) for match in RUN_IN_TEXT.finditer(text))
        if any(form in run for run in runs for form in forms.digits) or find_in_text(text, forms):
            found.append(str(path.relative_to(data_dir)))
    return found


def report(env: dict[str, str], number: str) -> dict[str, Any]:
    shown = run_cli(env, "privacy", "report", number, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    found: dict[str, Any] = json.loads(shown.stdout)
    return found


def totals(env: dict[str, str]) -> Any:
    shown = run_cli(env, "report", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def old_event(kind: str, desk: str, at: datetime) -> events.CallEvent:
    return events.CallEvent(
        event_id=events.new_event_id(), kind=kind, direction="inbound", call_id="old-1",  # type: ignore[arg-type]
        caller_id="0791230000", desk=desk, extension=None, occurred_at=events.format_time(at), argv=(),
    )  # fmt: skip


def launch_call(env: dict[str, str], number: str, call_id: str) -> None:
    for argv in (["/N:S", f"/C:{number}", "/T:I", f"/I:{call_id}"], ["/N:C", "/T:I", f"/I:{call_id}"],
                 ["/N:E", "/T:I", f"/I:{call_id}"]):  # fmt: skip
        done = run_notify(env, *argv)
        assert done.returncode == 0, done.stderr


def test_a_simulated_day_then_three_numbers_forgotten(
    env: dict[str, str],
    broker: Broker,
    settings: Settings,
    services: list[Service],
    agent_env: dict[str, str],
) -> None:
    data_dir = Path(settings.data_dir)
    declared = run_cli(env, "topology", "declare", "--desk", settings.desk)
    assert declared.returncode == 0, declared.stderr
    old = open_sqlite(data_dir / "analytics.sqlite3", "analytics")  # a call 100 days old: retention_calls 90
    with old.transaction():
        for kind in ("started", "ended"):
            apply_event(old, old_event(kind, settings.desk, datetime.now(UTC) - timedelta(days=100)))
    old_day = [dict(row) for row in old.execute("SELECT * FROM calls_daily")]
    old.close()
    crm = start_service(services, env, broker, settings.queue("crm"), "consume", "crm")
    analytics = start_service(services, env, broker, settings.queue("analytics"), "consume", "analytics")
    agent = start_service(
        services, {**agent_env, "TCX_BRIDGE_REPLAY_INTERVAL": "3600"}, broker, desk_queue(settings), "agent"
    )
    swept = open_sqlite(data_dir / "analytics.sqlite3", "analytics")  # the consumer swept it at start
    try:
        wait_until(lambda: swept.execute("SELECT count(*) FROM calls").fetchone()[0] == 0, timeout=10)
        assert [dict(row) for row in swept.execute("SELECT * FROM calls_daily")] == old_day  # the day stays
    finally:
        swept.close()
    day = run_cli(env, "simulate", "--calls", "12", "--desks", "2", "--speed", "600", "--seed", "3")
    assert day.returncode == 0, day.stderr
    launch_call(env, WITH_ZERO, "p-1")
    invalid = run_notify({**env, "TCX_BRIDGE_LOG_NUMBERS": "full"}, "/N:X", f"/C:{WITH_ZERO}", "/I:p-2")
    assert invalid.returncode == 2, invalid.stderr  # logged with its argv, the number in full
    masked = run_notify(env, "/N:X", f"/C:{WITH_ZERO}", "/I:p-3")
    assert masked.returncode == 2
    away = {**env, "TCX_BRIDGE_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"}
    assert run_notify(away, "/N:S", f"/C:{OUTBOXED}", "/T:I", "/I:p-4").returncode == 0
    unreadable = json.dumps({"type": "call", "caller_id": DEAD, "occurred_at": "not a time"}).encode()
    with Broker(settings.amqp_url, sign=True) as publisher:
        publisher.publish(settings.exchange, OutgoingMessage(f"call.started.inbound.{settings.desk}",
                                                             unreadable, "p-5", "call", 0))  # fmt: skip
    dead = settings.dead_queue("analytics")
    wait_until(lambda: (broker.queue_info(dead) or (0,))[0] >= 1, timeout=20)
    wait_until(lambda: report(env, WITH_ZERO)["places"] and len(_places(report(env, WITH_ZERO))) >= 4)

    notify_log = (data_dir / "logs" / "notify.log").read_text()
    assert "+41 (•)•• ••• 22 33" in notify_log  # masked: country code and last 4 digits
    assert notify_log.count("(0)79 111 22 33") == 1  # the one launch with log_numbers = full
    places = _places(report(env, WITH_ZERO))
    assert {
        "sqlite:analytics.sqlite3/calls",
        "sqlite:crm.sqlite3/calls",
        "sqlite:crm.sqlite3/journal",
    } <= places
    assert str(data_dir / "logs" / "notify.log") in places
    assert _places(report(env, OUTBOXED)) == {next(str(p) for p in (data_dir / "outbox").glob("*.json"))}
    assert {f"queue:{settings.dead_queue('analytics')}", f"queue:{settings.dead_queue('crm')}"} <= _places(
        report(env, DEAD)
    )
    before = totals(env)

    all_forms = {number: forms_of(number, "CH") for number in (WITH_ZERO, OUTBOXED, DEAD)}
    held = {name.split("-wal")[0] for name in held_anywhere(data_dir, all_forms[WITH_ZERO])}
    assert {"analytics.sqlite3", "crm.sqlite3", "logs/notify.log"} <= held
    assert [name.split("/")[0] for name in held_anywhere(data_dir, all_forms[OUTBOXED])] == ["outbox"]
    for number in all_forms:
        forgot = run_cli(env, "privacy", "forget", number)
        assert forgot.returncode == 0, forgot.stderr
        assert f"queue:{settings.namespace}.dead.*: by " in forgot.stdout
    for service in (crm, analytics, agent):  # each acts on the published command too
        wait_until(lambda service=service: service.output().count("privacy.forget ") >= 3, timeout=20)
    for number, forms in all_forms.items():
        assert held_anywhere(data_dir, forms) == [], number
    assert totals(env) == before  # the rows are kept for the totals
    audit = run_cli(env, "privacy", "audit", "--format", "json")
    entries = json.loads(audit.stdout)
    forgets = [entry for entry in entries if entry["action"] == "forget"]
    assert len(forgets) == 3
    assert {"sqlite:analytics.sqlite3/calls", "sqlite:crm.sqlite3/journal", "logs"} <= set(
        forgets[0]["places"]
    )
    assert set(forgets[1]["places"]) == {"outbox"}
    assert all(entry["number_hash"].startswith("#") for entry in forgets)
    assert {entry["broker_user"] for entry in forgets} == {"guest"}
    for service in (crm, analytics, agent):
        assert service.stop() == 0, service.output()


def _places(found: dict[str, Any]) -> set[str]:
    return {place["place"] for place in found["places"]}


def test_dead_letters_expire_after_retention_dead_and_an_older_ttl_is_kept(
    env: dict[str, str], broker: Broker, settings: Settings
) -> None:
    """topology declare gives new dead-letter queues x-message-ttl; a queue with another TTL still works."""
    short = {**env, "TCX_BRIDGE_RETENTION_DEAD": "1s"}
    assert run_cli(short, "topology", "declare").returncode == 0
    dead = settings.dead_queue("analytics")
    broker.publish(settings.dead_exchange, OutgoingMessage("analytics", b"{}", "d-1", "call", 0))
    assert (broker.queue_info(dead) or (0,))[0] == 1
    wait_until(lambda: (broker.queue_info(dead) or (1,))[0] == 0, timeout=10)  # dropped after 1 s
    again = run_cli({**env, "TCX_BRIDGE_RETENTION_DEAD": "3d"}, "topology", "declare")
    assert again.returncode == 0, again.stderr  # the existing queues keep their TTL (a policy changes it)
    quorum = run_cli({**short, "TCX_BRIDGE_QUORUM": "true"}, "topology", "declare")
    assert quorum.returncode == 1  # a type mismatch is still found on a dead-letter queue
    assert f"queue '{dead}' exists as a classic queue" in quorum.stderr
