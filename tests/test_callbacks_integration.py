"""A simulated day against the real broker: missed callers get tasks that close when they are reached.

Real notify launches (bridge.simulate.play), the callbacks consumer, two desk agents
driving the fake Assistant (which reports its outbound calls through notify), and
``tcx-bridge callbacks dial``; totals checked against the simulator's ground truth.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings
from bridge.simulate import Plan, PlannedLaunch, Timing, notify_command, play, truth_lines
from bridge.transport import Broker
from consumers.store.core import open_store
from tests.conftest import Service, Tap, free_port_in, run_cli, start_service, wait_until
from tests.test_metrics_integration import samples

pytestmark = pytest.mark.integration

A, B, C, D = "+41791000001", "+41791000002", "+41791000003", "+41791000004"


def inbound(at: float, desk: str, call_id: str, caller: str, answered: bool) -> list[PlannedLaunch]:
    base = ("/T:I", f"/I:{call_id}")
    launches = [PlannedLaunch(at, desk, ("/N:S", f"/C:{caller}", *base))]
    if answered:
        launches.append(PlannedLaunch(at + 0.3, desk, ("/N:C", *base)))
    return [*launches, PlannedLaunch(at + 0.6, desk, ("/N:E", *base))]


def day(one: str, two: str) -> Plan:
    """A missed twice (then calls again and is answered), B and C missed once, D answered, and two
    missed calls that open no task: anonymous and an internal extension."""
    calls = [
        inbound(0.0, one, "c1", A, False),
        inbound(0.1, two, "c2", "", False),  # anonymous
        inbound(0.2, one, "c3", "123", False),  # internal
        inbound(0.3, two, "c4", B, False),
        inbound(0.4, one, "c5", C, False),
        inbound(0.5, two, "c6", D, True),
        inbound(1.5, two, "c7", A, False),  # A again
        inbound(3.0, one, "c8", A, True),  # A calls again and is answered: the task closes without a dial
    ]
    return Plan(calls, {"answered": 2, "missed": 6, "outbound": 0, "burst": 0})


def port_of_ours() -> int:
    """A free port in this worktree's range (18200-18299)."""
    return free_port_in(range(18200, 18300))


def installed(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed next to {sys.executable}"
    return found


def tasks_now(settings: Settings) -> dict[str, dict[str, Any]]:
    store = open_store(settings, "callbacks")
    try:
        return {row["number_e164"]: dict(row) for row in store.execute("SELECT * FROM callbacks")}
    finally:
        store.close()


def dial(env: dict[str, str], task_id: int, desk: str) -> None:
    done = run_cli(env, "callbacks", "dial", str(task_id), "--desk", desk)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"callback task {task_id}: dial callback-{task_id}-")


def test_a_simulated_day_of_missed_callers_against_the_truth(
    env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    one, two = settings.desk, "d1"  # the second desk is one the fixtures clean up
    env = {**env, "TCX_BRIDGE_CALLBACK_MAX_ATTEMPTS": "2", "TCX_BRIDGE_TIMEZONE": "Europe/Zurich"}
    assert run_cli(env, "topology", "declare", "--desk", one, "--desk", two).returncode == 0
    tap = Tap(broker, settings, settings.exchange, "callback.#")
    port = port_of_ours()
    start_service(
        services,
        env,
        broker,
        settings.queue("callbacks"),
        "consume",
        "callbacks",
        "--metrics-port",
        str(port),
    )
    assistant = {"TCX_BRIDGE_ASSISTANT": installed("tcx-bridge-fake-assistant"), "TCX_FAKE_ASSISTANT_PAUSE": "0.3",
                 "TCX_FAKE_ASSISTANT_UNANSWERED": C}  # fmt: skip
    for desk in (one, two):
        agent_env = {**env, **assistant, "TCX_BRIDGE_DESK": desk}
        start_service(services, agent_env, broker, settings.queue(f"desk.{desk}"), "agent")

    plan = day(one, two)
    timings: dict[tuple[int, int], Timing] = {}
    outcome = play(plan, notify_command(), env, concurrency=8, timings=timings)
    assert outcome.failed == 0
    truth = truth_lines(plan, timings)
    opens = {line["number"] for line in truth if line["callback"] == "opens"}
    missed = Counter(line["number"] for line in truth if line["callback"] in ("opens", "adds"))
    reached_without_dial = {line["number"] for line in truth if line["callback"] == "reaches"}
    assert (opens, reached_without_dial) == ({A, B, C}, {A})  # the truth itself, as planned
    assert [line["number_kind"] for line in truth[:3]] == ["external", "anonymous", "internal"]

    wait_until(
        lambda: len(tasks_now(settings)) == 3 and tasks_now(settings)[A]["status"] == "closed", timeout=20
    )
    found = tasks_now(settings)
    assert set(found) == opens
    assert {number: row["missed_count"] for number, row in found.items()} == dict(missed)
    assert {n for n, row in found.items() if row["outcome"] == "reached"} == reached_without_dial
    assert (found[A]["reached_by"], found[A]["attempts"], found[A]["dial_state"]) == (one, 0, None)

    # B: dialed from desk one, confirmed and connected -> reached; C: rings out twice -> unreached
    dial(env, found[B]["id"], one)
    dial(env, found[C]["id"], two)
    wait_until(lambda: tasks_now(settings)[C]["attempts"] == 1, timeout=20)
    assert tasks_now(settings)[C]["status"] == "open"
    wait_until(
        lambda: tasks_now(settings)[C]["dial_desk"] == two and tasks_now(settings)[B]["status"] == "closed",
        timeout=20,
    )
    dial(env, found[C]["id"], one)
    wait_until(lambda: tasks_now(settings)[C]["status"] == "closed", timeout=20)
    found = tasks_now(settings)
    assert (found[B]["outcome"], found[B]["reached_by"], found[B]["attempts"]) == ("reached", one, 0)
    assert (found[C]["outcome"], found[C]["attempts"]) == ("unreached", 2)

    deliveries = tap.drain(idle=1.5)
    assert {delivery.user_id for delivery in deliveries} == {
        "guest"
    }  # signed: the broker vouches for the sender
    published = [json.loads(delivery.body) for delivery in deliveries]
    keys = Counter(event["type"] for event in published)
    assert keys == {"callback.opened": 3, "callback.assigned": 3, "callback.closed": 3}
    outcomes = {
        event["number_e164"]: event["outcome"] for event in published if event["type"] == "callback.closed"
    }
    assert outcomes == {A: "reached", B: "reached", C: "unreached"}
    delivered = tap.drain(idle=0.1)
    assert delivered == []

    def metric(name: str, **labels: str) -> float | None:
        return samples(port).get((name, tuple(sorted(labels.items()))))

    wait_until(lambda: metric("tcx_callbacks_open") == 0, timeout=10)
    assert metric("tcx_callbacks_closed_total", outcome="reached") == 2
    assert metric("tcx_callbacks_closed_total", outcome="unreached") == 1
    assert metric("tcx_callbacks_closed_total", outcome="closed") == 0
    assert metric("tcx_callback_seconds_count") == 2
