"""Outbox quarantine against the real broker: a refused event is set aside, the good ones behind it flow.

Each test gets a vhost and a desk user of its own on the shared broker (made with
rabbitmqctl, deleted after), whose topic permissions let it publish only for one
desk: an event of a mistyped desk is refused for good (ACCESS_REFUSED).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from bridge.config import Settings, load_settings
from bridge.errors import BrokerRejectedError
from bridge.outbox import WINDOW, Outbox
from bridge.outbox.files import sent_names
from bridge.topology import declare_events, publish_events
from bridge.transport import NOT_FOUND, Broker, OutgoingMessage
from tests.cluster import RABBITMQ_BIN
from tests.conftest import (
    LOCAL_URL,
    Service,
    Tap,
    desk_queue,
    free_port,
    run_cli,
    run_notify,
    script,
    wait_until,
)

pytestmark = pytest.mark.integration

CLOSED_PORT_URL = "amqp://guest:guest@127.0.0.1:1/%2F"


def rabbitmqctl(*args: str) -> None:
    command = shutil.which("rabbitmqctl") or str(RABBITMQ_BIN / "rabbitmqctl")
    done = subprocess.run([command, "-q", *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}"


def only_for(desk: str) -> str:
    """A topic-permission pattern: call events of this desk only."""
    return rf"^call\.[^.]+\.[^.]+\.{re.escape(desk)}$"


class Vhost(NamedTuple):
    """A vhost of the test's own, with a desk user that may publish only this desk's events."""

    name: str
    user: str
    env: dict[str, str]  # the desk, as its user
    admin_env: dict[str, str]  # guest on the same vhost
    settings: Settings

    def allow(self, *desks: str) -> None:
        pattern = "|".join(f"(?:{only_for(desk)})" for desk in desks)
        rabbitmqctl(
            "set_topic_permissions", "-p", self.name, self.user, self.settings.exchange, pattern, ".*"
        )


@pytest.fixture
def vhost(broker_url: str, env: dict[str, str], namespace: str, desk: str) -> Iterator[Vhost]:
    if broker_url != LOCAL_URL or not (
        shutil.which("rabbitmqctl") or (RABBITMQ_BIN / "rabbitmqctl").exists()
    ):
        pytest.skip(
            "needs rabbitmqctl on the local shared broker to make a vhost and a user of the test's own"
        )
    name, user, password = f"tcx-test-{namespace}", f"{namespace}-desk", uuid.uuid4().hex
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("add_user", user, password)
        try:
            rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
            rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
            admin_env = {**env, "TCX_BRIDGE_AMQP_URL": f"amqp://guest:guest@127.0.0.1:5672/{name}"}
            desk_env = {**env, "TCX_BRIDGE_AMQP_URL": f"amqp://{user}:{password}@127.0.0.1:5672/{name}"}
            settings = load_settings(environ=admin_env).settings
            made = Vhost(name, user, desk_env, admin_env, settings)
            made.allow(desk)
            yield made
        finally:
            rabbitmqctl("delete_user", user)
    finally:
        rabbitmqctl("delete_vhost", name)  # with every exchange and queue in it


@pytest.fixture
def admin(vhost: Vhost) -> Iterator[Broker]:
    with Broker(vhost.settings.amqp_url) as broker:
        yield broker


@pytest.fixture
def tap(admin: Broker, vhost: Vhost) -> Tap:
    declare_events(admin, vhost.settings)
    return Tap(admin, vhost.settings, vhost.settings.exchange, "#")


def outbox_while_away(env: dict[str, str], call_id: str) -> None:
    """A launch while the broker is away: its event waits in the outbox."""
    away = {**env, "TCX_BRIDGE_AMQP_URL": CLOSED_PORT_URL, "TCX_BRIDGE_PUBLISH_BUDGET": "0.2"}
    assert run_notify(away, "/N:S", "/C:1", "/T:I", f"/I:{call_id}").returncode == 0


def launch_as(env: dict[str, str], desk: str, call_id: str) -> str:
    """A launch with the desk setting mistyped: refused, kept in the outbox; return its stderr's last line."""
    done = run_notify({**env, "TCX_BRIDGE_DESK": desk}, "/N:S", "/C:1", "/T:I", f"/I:{call_id}")
    assert done.returncode == 0, done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_a_refused_event_is_set_aside_and_the_good_ones_flow(
    vhost: Vhost, tap: Tap, settings: Settings
) -> None:
    refused_line = launch_as(vhost.env, "desk-typo", "typo-1")
    assert "access to topic 'call.started.inbound.desk-typo'" in refused_line
    assert refused_line.endswith("the event is kept in the outbox until that is fixed")
    launch_as(vhost.env, "desk-other", "typo-2")
    for n in range(3):
        outbox_while_away(vhost.env, f"good-{n}")
    outbox = Outbox(settings.outbox_dir)
    assert len(outbox.paths()) == 5  # the two refused ones first

    flushed = run_cli(vhost.env, "spool", "flush")
    assert flushed.returncode == 0, flushed.stderr
    assert flushed.stdout.strip() == (
        f"flushed 3 event(s) to amqp://{vhost.user}:****@127.0.0.1:5672/{vhost.name}; 0 left; "
        f"2 refused for good, moved to {outbox.refused_dir} (`tcx-bridge spool list` says why)"
    )
    assert [json.loads(d.body)["call_id"] for d in tap.drain()] == ["good-0", "good-1", "good-2"]
    assert outbox.paths() == []
    typo, other = outbox.refused()
    assert "ACCESS_REFUSED" in typo.reason
    assert "access to topic 'call.started.inbound.desk-typo'" in typo.reason

    listed = run_cli(vhost.env, "spool", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert (
        lines[0] == f"{typo.path.name}  call.started.inbound.desk-typo  call.started  refused: {typo.reason}"
    )
    assert lines[1].startswith(f"{other.path.name}  call.started.inbound.desk-other  call.started  refused: ")
    assert lines[2:] == [
        f"0 event(s) in {settings.outbox_dir}",
        f"2 refused for good in {outbox.refused_dir}: fix the cause, then `tcx-bridge spool retry ID` "
        "(or --all); `tcx-bridge spool drop ID` deletes one",
    ]

    # Retried before the cause is fixed: refused again, and still nothing lost.
    retried = run_cli(vhost.env, "spool", "retry", "--all")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith("moved 2 event(s) back to ")
    assert len(outbox.paths()) == 2
    assert "2 refused for good" in run_cli(vhost.env, "spool", "flush").stdout

    # The admin grants desk-typo (say it was a real desk after all) and drops desk-other's event.
    vhost.allow(settings.desk, "desk-typo")
    assert run_cli(vhost.env, "spool", "retry", typo.event_id[:8]).returncode == 0
    dropped = run_cli(vhost.env, "spool", "drop", other.event_id)
    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stdout.startswith(f"dropped {other.path.name} (refused: ")
    flushed = run_cli(vhost.env, "spool", "flush")
    assert flushed.stdout.startswith("flushed 1 event(s) to ")
    assert flushed.stdout.strip().endswith("; 0 left")
    [arrived] = tap.drain()
    assert json.loads(arrived.body)["call_id"] == "typo-1"
    assert (outbox.paths(), outbox.refused(), list(outbox.refused_dir.iterdir())) == ([], [], [])


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["drop", "nope"],
            "Error: no refused event 'nope' in '{refused}'; `tcx-bridge spool list` shows their ids",
        ),
        (["retry"], "Error: give the id of a refused event (see `tcx-bridge spool list`) or --all"),  # exit 2
        (
            ["retry", "x", "--all"],
            "Error: give the id of a refused event (see `tcx-bridge spool list`) or --all",
        ),
    ],
)
def test_spool_commands_name_what_is_wrong(
    env: dict[str, str], settings: Settings, argv: list[str], error: str
) -> None:
    done = run_cli(env, "spool", *argv)
    assert done.returncode == (1 if argv[0] == "drop" else 2)
    assert done.stderr.strip().splitlines()[-1] == error.format(
        refused=Outbox(settings.outbox_dir).refused_dir
    )


def test_doctor_and_the_agent_show_refused_events(
    vhost: Vhost,
    tap: Tap,
    admin: Broker,
    settings: Settings,
    agent_env: dict[str, str],
    services: list[Service],
) -> None:
    """The agent's replay sets the refused event aside, publishes the rest, and its gauge counts it."""
    launch_as(vhost.env, "desk-typo", "typo-1")
    outbox_while_away(vhost.env, "good-0")
    doctor = run_cli(vhost.env, "doctor")
    assert "refused for good" not in doctor.stdout  # not yet: nothing was refused by a replay
    port = free_port()
    declared = run_cli(vhost.admin_env, "topology", "declare", "--desk", settings.desk)
    assert declared.returncode == 0, declared.stderr
    agent = Service(
        {**agent_env, **vhost.env, "TCX_BRIDGE_METRICS_PORT": str(port)},
        "agent",
    )
    services.append(agent)
    agent.wait_consuming(admin, desk_queue(vhost.settings))
    [arrived] = tap.drain(idle=2.0)
    assert json.loads(arrived.body)["call_id"] == "good-0"

    def gauge() -> float | None:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            found = re.search(r"^tcx_outbox_refused (\S+)$", answer.read().decode(), re.MULTILINE)
        return float(found.group(1)) if found else None

    wait_until(lambda: gauge() == 1.0)
    doctor = run_cli(vhost.env, "doctor")
    assert doctor.returncode == 1
    [line] = [line for line in doctor.stdout.splitlines() if "refused for good" in line]
    assert (
        f"1 event(s) refused for good by the broker, set aside in {Outbox(settings.outbox_dir).refused_dir}"
        in line
    )
    assert "(the latest: " in line
    assert line.endswith(
        "-> fix the cause (the user's rights, the desk setting), then `tcx-bridge spool retry --all`; "
        "`tcx-bridge spool list` shows each, `tcx-bridge spool drop ID` deletes one"
    )


def outgoing(n: int, settings: Settings) -> OutgoingMessage:
    return OutgoingMessage(
        routing_key=f"call.started.inbound.{settings.desk}",
        body=b'{"n":%d}' % n,
        message_id=f"{uuid.uuid4()}",
        type="call.started",
        timestamp=1700000000 + n,
        app_id="tcx-bridge-notify",
    )


def test_a_pipelined_replay_delivers_each_event_once_and_removes_its_files(
    broker: Broker, settings: Settings, events_tap: Tap
) -> None:
    outbox = Outbox(settings.outbox_dir)
    messages = [outgoing(n, settings) for n in range(250)]
    for m in messages:
        outbox.put(m)
    result = outbox.replay(publish_batch=functools.partial(publish_events, broker, settings), window=100)
    assert (result.published, result.remaining) == (250, 0)
    outbox.join_cleanup()
    assert [p.name for p in settings.outbox_dir.iterdir() if p.suffix == ".json"] == []
    assert not outbox.has_sent()
    arrived = broker.browse(events_tap.name)
    assert [d.message_id for d in arrived] == [m.message_id for m in messages]  # once each, in order
    first = arrived[0]
    assert (first.type, first.timestamp, first.user_id, first.headers) == (
        "call.started",
        1700000000,
        "guest",  # signed: the broker vouches for the publisher
        {},
    )
    assert first.body == b'{"n":0}'


def test_sent_files_a_dead_replayer_left_are_not_published_again(
    broker: Broker, settings: Settings, events_tap: Tap
) -> None:
    """The journal appended, the process killed before its removals: the next replay publishes the rest only."""
    outbox = Outbox(settings.outbox_dir)
    messages = [outgoing(n, settings) for n in range(10)]
    paths = [outbox.put(m) for m in messages]
    outbox.record_sent([p.name for p in paths[:6]])
    assert len(outbox.paths()) == 4
    result = Outbox(settings.outbox_dir).replay(
        publish_batch=functools.partial(publish_events, broker, settings)
    )
    assert (result.published, result.remaining) == (4, 0)
    Outbox(settings.outbox_dir).join_cleanup()
    assert [d.message_id for d in broker.browse(events_tap.name)] == [m.message_id for m in messages[6:]]
    assert [p for p in settings.outbox_dir.iterdir() if p.suffix == ".json"] == []


def test_publish_many_keeps_its_channel_across_batches_and_recovers_from_a_refused_one(
    broker: Broker, settings: Settings, events_tap: Tap
) -> None:
    batches = [[outgoing(n + 10 * b, settings) for n in range(10)] for b in range(3)]
    assert broker.publish_many(settings.exchange, batches[0]) == (10, None)
    assert broker.publish_many(settings.exchange, batches[1]) == (10, None)  # tags go on from 11
    confirmed, error = broker.publish_many(f"{settings.namespace}.missing", batches[2])
    assert confirmed == 0
    assert isinstance(error, BrokerRejectedError)
    assert error.reply_code == NOT_FOUND
    assert broker.publish_many(settings.exchange, batches[2]) == (10, None)  # on a channel of its own
    assert [d.message_id for d in broker.browse(events_tap.name)] == [
        m.message_id for b in batches for m in b
    ]


def test_a_flush_killed_mid_replay_loses_nothing_and_repeats_at_most_a_window(
    broker: Broker, settings: Settings, env: dict[str, str], events_tap: Tap
) -> None:
    """SIGKILL once the first window is recorded as sent: the next flush publishes the rest, none sent again."""
    outbox = Outbox(settings.outbox_dir)
    messages = [outgoing(n, settings) for n in range(3000)]
    for m in messages:
        outbox.put(m)
    flush = subprocess.Popen([*script("tcx-bridge"), "spool", "flush"], env=env, stdout=subprocess.DEVNULL)
    try:
        wait_until(outbox.has_sent, timeout=30, every=0.002)
    finally:
        flush.kill()
        flush.wait()
    sent = sent_names(settings.outbox_dir)
    assert sent
    assert all((settings.outbox_dir / name).exists() for name in sent)  # killed before its removals
    assert len(outbox.paths()) == 3000 - len(sent)
    flushed = run_cli(env, "spool", "flush")
    assert flushed.returncode == 0, flushed.stderr
    assert flushed.stdout.strip().endswith("; 0 left")
    assert not any((settings.outbox_dir / name).exists() for name in sent)
    delivered = [d.message_id for d in broker.browse(events_tap.name)]
    assert set(delivered) == {m.message_id for m in messages}  # nothing lost
    assert len(delivered) - len(messages) <= WINDOW  # at most the window in flight, with its event ids
    assert not any(delivered.count(m.message_id) > 1 for m in messages[: len(sent)])  # none sent twice
