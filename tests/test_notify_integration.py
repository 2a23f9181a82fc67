"""The registered executable against the real broker: routing, bodies, outages, bursts."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.outbox import Outbox
from bridge.transport import Broker
from tests.conftest import Proxy, Tap, run_cli, run_notify

pytestmark = pytest.mark.integration

CLOSED_PORT_URL = "amqp://guest:guest@127.0.0.1:1/%2F"

SEED = [
    (
        ["/N:S", "/C:0791234567", "/T:I", "/I:5001"],
        "call.started.inbound",
        "started",
        "inbound",
        "0791234567",
    ),
    (["/N:C", "/T:I", "/I:5001"], "call.connected.inbound", "connected", "inbound", None),
    (["/N:E", "/T:I", "/I:5001"], "call.ended.inbound", "ended", "inbound", None),
    (["/N:S", "/T:O", "/I:0441234567"], "call.started.outbound", "started", "outbound", None),
    (["/N:C", "/T:O", "/I:0441234567"], "call.connected.outbound", "connected", "outbound", None),
    (["/N:E", "/T:O", "/I:0441234567"], "call.ended.outbound", "ended", "outbound", None),
]


@pytest.mark.parametrize(("argv", "prefix", "kind", "direction", "caller_id"), SEED)
def test_seed_launch_arrives_routed_with_its_body(
    env: dict[str, str],
    settings: Settings,
    events_tap: Tap,
    argv: list[str],
    prefix: str,
    kind: str,
    direction: str,
    caller_id: str | None,
) -> None:
    done = run_notify(env, *argv)
    assert done.returncode == 0, done.stderr
    delivery = events_tap.get()
    assert delivery is not None
    assert delivery.routing_key == f"{prefix}.{settings.desk}"
    body = json.loads(delivery.body)
    assert (body["kind"], body["direction"], body["caller_id"]) == (kind, direction, caller_id)
    assert body["call_id"] == argv[-1][3:]
    assert body["argv"] == argv
    assert delivery.message_id == body["event_id"]
    assert delivery.type == f"call.{kind}"


def test_fresh_broker_gets_the_topology_from_the_first_launch(
    env: dict[str, str], settings: Settings, broker: Broker
) -> None:
    """No exchange exists yet: the launch declares it, and with nobody bound the event is kept."""
    assert not broker.exchange_exists(settings.exchange)
    done = run_notify(env, "/N:S", "/C:1", "/T:I", "/I:1")
    assert done.returncode == 0, done.stderr
    assert broker.exchange_exists(settings.exchange)
    kept = broker.get(settings.unrouted_exchange, timeout=5)
    assert kept is not None
    assert kept.routing_key == f"call.started.inbound.{settings.desk}"
    assert list(Outbox(settings.outbox_dir).paths()) == []


def test_invalid_launch_is_published_to_the_invalid_route(
    env: dict[str, str], settings: Settings, events_tap: Tap
) -> None:
    done = run_notify(env, "/N:X", "/I:77")
    assert done.returncode == 2
    assert "unknown notification type /N:'X'; expected S, C or E" in done.stderr
    delivery = events_tap.get()
    assert delivery is not None
    assert delivery.routing_key == f"call.invalid.{settings.desk}"
    body = json.loads(delivery.body)
    assert body["kind"] == "invalid"
    assert body["argv"] == ["/N:X", "/I:77"]
    assert body["reason"] == "unknown notification type /N:'X'; expected S, C or E"
    log = (Path(settings.log_dir) / "notify.log").read_text()
    assert "call.invalid" in log


def test_launch_with_no_arguments_is_published_as_invalid(
    env: dict[str, str], settings: Settings, events_tap: Tap
) -> None:
    done = run_notify(env)
    assert done.returncode == 2
    delivery = events_tap.get()
    assert delivery is not None
    assert json.loads(delivery.body)["argv"] == []


def test_outage_outboxes_then_flush_delivers_each_once_in_order(
    env: dict[str, str], settings: Settings, events_tap: Tap
) -> None:
    down = {**env, "TCX_BRIDGE_AMQP_URL": CLOSED_PORT_URL, "TCX_BRIDGE_PUBLISH_BUDGET": "0.5"}
    call_ids = [f"out-{n}" for n in range(5)]
    for call_id in call_ids:
        started = time.monotonic()
        done = run_notify(down, "/N:E", "/T:I", f"/I:{call_id}")
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 5  # bounded by the budget, not hung
    assert len(Outbox(settings.outbox_dir).paths()) == 5
    assert events_tap.get(timeout=0.5) is None
    log = (Path(settings.log_dir) / "notify.log").read_text()
    assert log.count("outboxed call.ended.inbound") == 5
    assert "guest:guest" not in log

    flushed = run_cli(env, "spool", "flush")
    assert flushed.returncode == 0, flushed.stderr
    assert "flushed 5 event(s)" in flushed.stdout
    arrived = [json.loads(d.body)["call_id"] for d in events_tap.drain()]
    assert arrived == call_ids
    assert Outbox(settings.outbox_dir).paths() == []


def test_next_launch_replays_the_outbox(env: dict[str, str], settings: Settings, events_tap: Tap) -> None:
    down = {**env, "TCX_BRIDGE_AMQP_URL": CLOSED_PORT_URL, "TCX_BRIDGE_PUBLISH_BUDGET": "0.2"}
    assert run_notify(down, "/N:S", "/C:1", "/T:I", "/I:old").returncode == 0
    assert run_notify(env, "/N:S", "/C:1", "/T:I", "/I:new").returncode == 0
    arrived = [json.loads(d.body)["call_id"] for d in events_tap.drain()]
    assert sorted(arrived) == ["new", "old"]
    assert arrived[0] == "new"  # the fresh event goes first; the backlog follows
    assert Outbox(settings.outbox_dir).paths() == []


def test_replay_per_launch_is_bounded(env: dict[str, str], settings: Settings, events_tap: Tap) -> None:
    down = {**env, "TCX_BRIDGE_AMQP_URL": CLOSED_PORT_URL, "TCX_BRIDGE_PUBLISH_BUDGET": "0.2"}
    for n in range(4):
        assert run_notify(down, "/N:E", "/T:I", f"/I:{n}").returncode == 0
    assert run_notify({**env, "TCX_BRIDGE_REPLAY_BATCH": "2"}, "/N:E", "/T:I", "/I:now").returncode == 0
    assert len(events_tap.drain()) == 3
    assert len(Outbox(settings.outbox_dir).paths()) == 2


def test_fifty_concurrent_launches_during_an_outage_are_flushed_once_each(
    env: dict[str, str], settings: Settings, events_tap: Tap
) -> None:
    down = {**env, "TCX_BRIDGE_AMQP_URL": CLOSED_PORT_URL, "TCX_BRIDGE_PUBLISH_BUDGET": "0.5"}
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(
            pool.map(lambda n: run_notify(down, "/N:S", f"/C:{n}", "/T:I", f"/I:burst-{n}"), range(50))
        )
    assert [r.returncode for r in results] == [0] * 50
    assert len(Outbox(settings.outbox_dir).paths()) == 50

    # replays race: two flushes and a live launch at once must still publish each event once
    with ThreadPoolExecutor(max_workers=3) as pool:
        jobs = [
            pool.submit(run_cli, env, "spool", "flush"),
            pool.submit(run_cli, env, "spool", "flush"),
            pool.submit(run_notify, env, "/N:E", "/T:I", "/I:live"),
        ]
        assert [job.result().returncode for job in jobs] == [0, 0, 0]
    call_ids = [json.loads(d.body)["call_id"] for d in events_tap.drain()]
    burst = [c for c in call_ids if c.startswith("burst-")]
    assert len(burst) == 50
    assert sorted(set(burst)) == sorted(f"burst-{n}" for n in range(50))
    assert "live" in call_ids
    assert Outbox(settings.outbox_dir).paths() == []


def test_mandatory_unroutable_without_alternate_exchange_goes_to_the_outbox(
    env: dict[str, str], settings: Settings, broker: Broker
) -> None:
    """An exchange declared by someone else without our alternate exchange: a return is a failure."""
    broker.declare_exchange(settings.exchange, "topic")
    done = run_notify({**env, "TCX_BRIDGE_PUBLISH_BUDGET": "0.3"}, "/N:E", "/T:I", "/I:1")
    assert done.returncode == 0, done.stderr
    assert len(Outbox(settings.outbox_dir).paths()) == 1
    log = (Path(settings.log_dir) / "notify.log").read_text()
    assert "returned the message as unroutable" in log


def test_bad_configuration_keeps_the_event_for_later(
    env: dict[str, str], settings: Settings, events_tap: Tap
) -> None:
    """A typo in the configuration must not lose the call: the event waits in the outbox."""
    done = run_notify({**env, "TCX_BRIDGE_PUBLISH_BUDGET": "3s"}, "/N:S", "/C:1", "/T:I", "/I:typo")
    assert done.returncode == 0  # the event is safe: exit 0 exactly when confirmed or stored
    assert done.stderr.strip().splitlines() == [
        "tcx-bridge-notify: configuration error: TCX_BRIDGE_PUBLISH_BUDGET: '3s' is not a number; give e.g. 1.1; "
        "the event is kept in the outbox until that is fixed"
    ]
    assert len(Outbox(settings.outbox_dir).paths()) == 1
    assert run_cli(env, "spool", "flush").returncode == 0
    delivery = events_tap.get()
    assert delivery is not None
    body = json.loads(delivery.body)
    assert body["call_id"] == "typo"
    assert body["desk"] == settings.desk  # the good settings were kept


def test_an_outboxed_launch_says_so_on_stderr(env: dict[str, str], settings: Settings) -> None:
    """Run by hand or by a script, a launch whose event waits in the outbox says so, and why, in one line."""
    down = {**env, "TCX_BRIDGE_AMQP_URL": CLOSED_PORT_URL, "TCX_BRIDGE_PUBLISH_BUDGET": "0.2"}
    done = run_notify(down, "/N:E", "/T:I", "/I:away")
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"tcx-bridge-notify: outboxed call.ended.inbound.{settings.desk} event_id=")
    assert "call_id=away" in line
    assert "(connect to 127.0.0.1:1: the broker cannot be reached (" in line
    assert line.endswith(f"; it waits in {settings.outbox_dir} for the next replay")
    assert "guest:guest" not in line


def test_a_published_launch_says_its_outcome_only_on_a_terminal(
    env: dict[str, str], settings: Settings, events_tap: Tap
) -> None:
    """A script's stderr stays quiet when all went well; a person at a terminal sees the outcome."""
    import os
    import pty
    import subprocess

    from tests.conftest import script

    piped = run_notify(env, "/N:S", "/C:1", "/T:I", "/I:quiet")
    assert (piped.returncode, piped.stderr) == (0, "")
    main, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [*script("tcx-bridge-notify"), "/N:S", "/C:1", "/T:I", "/I:shown"],
            env=env, stdout=subprocess.DEVNULL, stderr=terminal, timeout=30, check=False,
        )  # fmt: skip
        os.close(terminal)
        seen = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the terminal's other end is closed, all was read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(main)
    assert done.returncode == 0
    [line] = seen.decode().strip().splitlines()
    assert line.startswith(f"tcx-bridge-notify: published call.started.inbound.{settings.desk} event_id=")
    assert "call_id=shown" in line
    assert [json.loads(d.body)["call_id"] for d in events_tap.drain()] == ["quiet", "shown"]


def test_a_silent_broker_cannot_hang_the_launch(
    broker_url: str, env: dict[str, str], settings: Settings, broker: Broker
) -> None:
    """Connected, then no confirm: the watchdog keeps the event and ends the launch on time."""
    from bridge.topology import declare_events

    declare_events(broker, settings)
    proxy = Proxy(broker_url, swallow_publishes=True)
    try:
        started = time.monotonic()
        done = run_notify(
            {**env, "TCX_BRIDGE_AMQP_URL": proxy.url, "TCX_BRIDGE_PUBLISH_BUDGET": "0.5"},
            "/N:S",
            "/C:1",
            "/T:I",
            "/I:silent",
            timeout=20,
        )
        took = time.monotonic() - started
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr
    assert 2.4 < took < 6  # 0.5 s budget + 2 s grace, then out
    paths = Outbox(settings.outbox_dir).paths()
    assert len(paths) == 1
    assert Outbox(settings.outbox_dir).load(paths[0]).routing_key == f"call.started.inbound.{settings.desk}"
    assert "the broker did not confirm within 2.5s" in (Path(settings.log_dir) / "notify.log").read_text()


def test_an_unexpected_error_still_keeps_the_event(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the publish path must not cost the call: the event is outboxed, then the error shows."""
    from bridge import notify, topology

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(topology, "publish_event", broken)  # notify imports it when it publishes itself
    monkeypatch.setattr(notify, "load_settings", lambda **_: type("L", (), {"settings": settings})())
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with pytest.raises(RuntimeError, match="a bug"):
            notify.run(["/N:E", "/T:I", "/I:bug"])
    finally:  # run() configures logging for a process of its own
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    paths = Outbox(settings.outbox_dir).paths()
    assert len(paths) == 1
    assert Outbox(settings.outbox_dir).load(paths[0]).routing_key == f"call.ended.inbound.{settings.desk}"
