"""The desk fast path end to end: real launches, a real desk agent (SIGKILLed at each step), the real broker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import handoff, loopback
from bridge.config import Settings
from bridge.transport import Broker, Delivery
from tests.conftest import Service, Tap, desk_queue, run_notify, wait_until
from tests.test_consumers_integration import analytics_rows, processed_count
from tests.test_handoff import HangingAgent
from tests.test_handoff_tcp import FakeAgent, attack

pytestmark = pytest.mark.integration

# The desk agent, with SIGKILL at one step of a hand-off (none: it runs as shipped).
AGENT = """
import os, signal, sys
from consumers.agent import consumer, handoff
step = sys.argv[1]

def die(*_):
    os.kill(os.getpid(), signal.SIGKILL)

if step == "before-store":  # the launch's frame read, nothing written
    handoff.HandoffServer._store = lambda self, message: die()
elif step == "before-answer":  # the event fsync'd into the outbox, no answer yet
    handoff.HandoffServer._answer = staticmethod(lambda connection, answer: die())
elif step == "before-confirm":  # answered; killed as it publishes, before any confirm
    consumer.publish_events = die
elif step == "during-replay":  # published and confirmed, killed before the outbox file is removed
    publish = consumer.publish_events
    def publish_then_die(*args):
        publish(*args)
        die()
    consumer.publish_events = publish_then_die
from bridge.cli import main
sys.argv = ["tcx-bridge", "agent"]
main()
"""


class Agent:
    """``tcx-bridge agent`` in a process of its own, killed at a step or stopped."""

    def __init__(self, env: dict[str, str], broker: Broker, settings: Settings, step: str = "none") -> None:
        self.log = Path(env["TCX_BRIDGE_DATA_DIR"]).parent / f"agent-{uuid.uuid4().hex[:6]}.log"
        endpoint = handoff.endpoint_of(env.get("TCX_BRIDGE_HANDOFF_ENDPOINT", ""))
        name = handoff.SOCKET if endpoint == "unix" else loopback.FILE
        self.socket = Path(handoff.directory_of(env["TCX_BRIDGE_DATA_DIR"])) / name  # or handoff.tcp
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", AGENT, step], env=env, stdout=out, stderr=out
            )

        def ready() -> bool:
            assert self.process.poll() is None, self.log.read_text()
            info = broker.queue_info(desk_queue(settings))
            return info is not None and info[1] > 0 and self.socket.exists()

        wait_until(ready, 20)

    def killed(self) -> bool:
        return self.process.poll() == -9

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(20)


@pytest.fixture
def fast_env(env: dict[str, str]) -> dict[str, str]:
    # a generous timeout: a loaded test machine must not turn a hand-off into a fallback by chance
    return {**env, "TCX_BRIDGE_HANDOFF_TIMEOUT": "2", "TCX_BRIDGE_ASSISTANT": "/bin/true"}


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.process.poll() is None:
            agent.process.kill()
            agent.process.wait(10)


def launch(env: dict[str, str], call_id: str, kind: str = "S") -> str:
    """One launch; its outcome line (from the notify log's last line)."""
    log = Path(env["TCX_BRIDGE_DATA_DIR"]) / "logs" / "notify.log"

    def outcomes() -> list[str]:
        text = log.read_text() if log.exists() else ""
        return [line for line in text.splitlines() if f"call_id={call_id} " in line]

    before = len(outcomes())
    done = run_notify(env, f"/N:{kind}", "/C:0791234567", "/T:I", f"/I:{call_id}")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: len(outcomes()) > before)  # the agent writes a handed launch's line after its answer
    return outcomes()[-1]


def call_ids(deliveries: list[Delivery]) -> list[str]:
    return [json.loads(delivery.body)["call_id"] for delivery in deliveries]


@pytest.mark.parametrize("endpoint", ["unix", "tcp"])
def test_handed_event_equals_a_published_one_but_for_id_and_time(
    fast_env: dict[str, str],
    broker: Broker,
    settings: Settings,
    events_tap: Tap,
    agents: list[Agent],
    endpoint: str,
) -> None:
    fast_env = {**fast_env, "TCX_BRIDGE_HANDOFF_ENDPOINT": endpoint}
    agents.append(Agent(fast_env, broker, settings))
    assert " INFO handed call.started.inbound." in launch(fast_env, "42")
    handed = events_tap.get(timeout=10)
    agents[0].stop()
    assert " INFO published call.started.inbound." in launch(fast_env, "42")
    published = events_tap.get(timeout=10)
    assert handed is not None
    assert published is not None
    first, second = json.loads(handed.body), json.loads(published.body)
    body = handed.body
    for field in ("event_id", "occurred_at"):
        assert first[field] != second[field]
        body = body.replace(first[field].encode(), second[field].encode())
    assert body == published.body
    same = ("routing_key", "exchange", "type", "user_id", "headers", "expiration")
    assert [getattr(handed, name) for name in same] == [getattr(published, name) for name in same]
    assert handed.message_id == first["event_id"]


@pytest.mark.parametrize(
    ("step", "outcome", "endpoint"),
    [
        (
            "before-store",
            "published",
            "unix",
        ),  # no answer: the launch publishes; nothing stored, one delivery
        ("before-answer", "published", "unix"),  # stored, no answer: published twice (same event_id)
        ("before-answer", "published", "tcp"),  # the same on 127.0.0.1 (the killed agent leaves handoff.tcp)
        ("before-confirm", "handed", "unix"),  # the outbox holds it until the next agent replays it
        ("during-replay", "handed", "unix"),  # confirmed, not removed: replayed again (same event_id)
    ],
)
def test_agent_killed_at_each_step_loses_nothing(
    fast_env: dict[str, str],
    broker: Broker,
    settings: Settings,
    events_tap: Tap,
    agents: list[Agent],
    step: str,
    outcome: str,
    endpoint: str,
) -> None:
    fast_env = {**fast_env, "TCX_BRIDGE_HANDOFF_ENDPOINT": endpoint}
    agents.append(Agent(fast_env, broker, settings, step))
    line = launch(fast_env, "7")
    assert f" INFO {outcome} call.started.inbound." in line
    wait_until(agents[0].killed)
    agents.append(Agent(fast_env, broker, settings))  # the desk agent comes back: it replays the outbox
    wait_until(lambda: not any(settings.outbox_dir.glob("*.json")))
    launch(fast_env, "8", "E")  # a later call goes through the new agent
    delivered = events_tap.drain(idle=1.0)
    assert sorted(set(call_ids(delivered))) == ["7", "8"]
    by_id: dict[str | None, set[bytes]] = {}
    for delivery in delivered:
        by_id.setdefault(delivery.message_id, set()).add(delivery.body)
    assert len(by_id) == 2, "a duplicate is the same event (same event_id), which consumers drop"
    assert all(len(bodies) == 1 for bodies in by_id.values())
    duplicates = len(delivered) - len(by_id)
    assert duplicates == (1 if step in ("before-answer", "during-replay") else 0)


def test_hung_agent_the_launch_publishes_itself(
    env: dict[str, str], broker: Broker, settings: Settings, events_tap: Tap
) -> None:
    hung = HangingAgent(Path(handoff.directory_of(env["TCX_BRIDGE_DATA_DIR"])))
    try:
        line = launch({**env, "TCX_BRIDGE_HANDOFF_TIMEOUT": "0.05"}, "9")
    finally:
        hung.close()
    assert " INFO published call.started.inbound." in line
    assert hung.held, "the launch tried the agent first"
    delivered = events_tap.drain(idle=0.5)
    assert call_ids(delivered) == ["9"]


def test_agent_wakes_at_once_for_a_handed_event(
    fast_env: dict[str, str], broker: Broker, settings: Settings, events_tap: Tap, agents: list[Agent]
) -> None:
    """The replay interval is 30 s: a handed event is published when the hand-off wakes the agent."""
    agents.append(Agent({**fast_env, "TCX_BRIDGE_REPLAY_INTERVAL": "30"}, broker, settings))
    launch(fast_env, "11")
    delivery = events_tap.get(timeout=5)
    assert delivery is not None
    assert call_ids([delivery]) == ["11"]
    wait_until(lambda: not any(settings.outbox_dir.glob("*.json")), 5)


def test_a_replayed_duplicate_is_dropped_by_the_consumers(
    fast_env: dict[str, str],
    broker: Broker,
    settings: Settings,
    events_tap: Tap,
    agents: list[Agent],
    analytics: Service,
) -> None:
    """The agent killed after the broker confirmed, before it removed the file: the analytics consumer gets
    the event twice and records it once."""
    agents.append(Agent(fast_env, broker, settings, "during-replay"))
    launch(fast_env, "21")
    wait_until(agents[0].killed)
    agents.append(Agent(fast_env, broker, settings))
    wait_until(lambda: not any(settings.outbox_dir.glob("*.json")))
    delivered = events_tap.drain(idle=1.0)
    assert call_ids(delivered) == ["21", "21"]
    assert len({delivery.message_id for delivery in delivered}) == 1
    wait_until(
        lambda: processed_count(settings, "analytics") == 1 and "outcome=duplicate" in analytics.output()
    )
    assert [row["call_id"] for row in analytics_rows(settings)] == ["21"]


@pytest.fixture
def tcp_env(fast_env: dict[str, str]) -> dict[str, str]:
    return {**fast_env, "TCX_BRIDGE_HANDOFF_ENDPOINT": "tcp"}


def test_a_client_without_the_secret_gets_nothing_published(
    tcp_env: dict[str, str], broker: Broker, settings: Settings, events_tap: Tap, agents: list[Agent]
) -> None:
    """A local process reads no handoff.tcp (0600) and connects to the agent's port with a launch frame and
    a made-up proof: nothing is stored, nothing published; the next real launch is handed over."""
    agent = Agent(tcp_env, broker, settings)
    agents.append(agent)
    found = loopback.read_endpoint(agent.socket.parent)
    assert isinstance(found, tuple), found
    port = found[0]
    frame = handoff.encode_launch(
        ["/N:S", "/T:I", "/I:66"], tcp_env, 1, time.time_ns(), handoff.new_event_id()
    )
    assert len(attack(port, os.urandom(32), os.urandom(32) + frame)) == 64  # the agent's proof, nothing more
    assert attack(port, frame) != b"ok"
    assert events_tap.drain(idle=1.0) == []
    assert not any(settings.outbox_dir.glob("*.json"))
    assert " INFO handed call.started.inbound." in launch(tcp_env, "67")
    assert call_ids(events_tap.drain(idle=1.0)) == ["67"]
    log = agent.log.read_text()
    assert log.count("desk fast path: refused a connection from 127.0.0.1:") == 2, log
    assert found[1].hex() not in log


def test_a_port_squatter_gets_no_frame_and_the_launch_publishes_itself(
    tcp_env: dict[str, str], broker: Broker, settings: Settings, events_tap: Tap, agents: list[Agent]
) -> None:
    """The agent is SIGKILLed (its handoff.tcp stays) and a process squats its port, answering as an agent
    would without the secret: the launch sends it no frame, publishes itself, and the event is delivered."""
    agent = Agent(tcp_env, broker, settings)
    agents.append(agent)
    found = loopback.read_endpoint(agent.socket.parent)
    assert isinstance(found, tuple), found
    agent.process.send_signal(signal.SIGKILL)
    wait_until(agent.killed)
    assert agent.socket.exists(), "a killed agent leaves its file"
    fake = FakeAgent(found[0], os.urandom(64))
    try:
        line = launch(tcp_env, "68")
    finally:
        received = fake.close()
    assert " INFO published call.started.inbound." in line
    assert [len(got) for got in received] == [32], "the launch's nonce, no frame, no proof"
    assert call_ids(events_tap.drain(idle=1.0)) == ["68"]


def test_a_stale_endpoint_file_costs_the_launch_nothing(
    tcp_env: dict[str, str], broker: Broker, settings: Settings, events_tap: Tap, agents: list[Agent]
) -> None:
    """The agent killed, nobody on its port: the launch is refused at once and publishes itself."""
    agent = Agent(tcp_env, broker, settings)
    agents.append(agent)
    agent.process.send_signal(signal.SIGKILL)
    wait_until(agent.killed)
    assert agent.socket.exists()
    port = loopback.read_endpoint(agent.socket.parent)
    assert isinstance(port, tuple)
    with socket.socket() as probe:  # nobody listens there now
        assert probe.connect_ex(("127.0.0.1", port[0])) != 0
    assert " INFO published call.started.inbound." in launch(
        {**tcp_env, "TCX_BRIDGE_HANDOFF_TIMEOUT": "5"}, "69"
    )
    assert call_ids(events_tap.drain(idle=1.0)) == ["69"]
