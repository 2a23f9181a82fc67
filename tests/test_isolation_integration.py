"""Fault isolation against the real broker: no message and no desk can stop the line."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.outbox import Outbox
from bridge.transport import Broker, OutgoingMessage
from tests.conftest import Service, Tap, run_cli, run_notify, start_service, wait_until
from tests.test_consumers_integration import (
    T0,
    analytics_rows,
    call_message,
    processed_count,
    send,
)

pytestmark = pytest.mark.integration


def with_headers(message: OutgoingMessage, **headers: object) -> OutgoingMessage:
    return message._replace(headers={key.replace("_", "-"): value for key, value in headers.items()})


def dead_letters(broker: Broker, settings: Settings, name: str, count: int) -> dict[str, dict[str, object]]:
    found = {}
    for _ in range(count):
        dead = broker.get(settings.dead_queue(name), timeout=15)
        assert dead is not None, f"only {len(found)} of {count} dead letters arrived"
        found[dead.message_id or ""] = dead.headers
    return found


@pytest.mark.parametrize("bad", ["abc", [1, 2], 2**62, -5, True, {"n": 1}])
def test_a_poison_attempts_header_neither_stops_the_consumer_nor_the_valid_events(
    analytics: Service, broker: Broker, settings: Settings, bad: object
) -> None:
    poison = with_headers(
        OutgoingMessage(f"call.started.inbound.{settings.desk}", b"{not json", "poison", "call.started", 0),
        x_tcx_attempts=bad,
    )
    valid_but_odd_header = with_headers(
        call_message(settings, "started", "inbound", "odd", T0, "1"), x_tcx_attempts=bad
    )
    send(
        broker,
        settings,
        call_message(settings, "started", "inbound", "before", T0, "1"),
        poison,
        valid_but_odd_header,
        call_message(settings, "started", "inbound", "after", T0, "1"),
    )
    wait_until(lambda: len(analytics_rows(settings)) == 3)
    assert sorted(r["call_id"] for r in analytics_rows(settings)) == ["after", "before", "odd"]
    headers = dead_letters(broker, settings, "analytics", 1)["poison"]
    assert headers["x-tcx-attempts"] == 1  # a header of ours that is not ours to trust counts as attempt 1
    assert str(headers["x-tcx-reason"]).startswith("undecodable:")
    assert analytics.process.poll() is None


def test_a_pop_for_a_desk_without_agent_never_holds_up_the_other_desks(
    env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]
) -> None:
    from bridge.topology import declare_commands, declare_events

    declare_events(broker, settings)
    declare_commands(broker, settings)
    d1_pops = Tap(broker, settings, settings.commands_exchange, "desk.d1.popup")
    crm = start_service(services, env, broker, settings.queue("crm"), "consume", "crm")
    now = datetime.now(UTC)
    send(
        broker,
        settings,
        call_message(settings, "started", "inbound", "lonely", now, "0791234567", desk="nobody-here"),
    )
    started = time.monotonic()
    send(
        broker,
        settings,
        *(
            call_message(settings, "started", "inbound", f"c{n}", now, "0791234567", desk="d1")
            for n in range(100)
        ),
    )
    wait_until(lambda: processed_count(settings, "crm") == 101, timeout=20)
    elapsed = time.monotonic() - started
    assert len(d1_pops.drain(idle=0.5)) == 100
    unrouted = [broker.get(settings.unrouted_exchange, timeout=5) for _ in range(1)]
    assert unrouted[0] is not None
    assert unrouted[0].routing_key == "desk.nobody-here.popup"
    assert unrouted[0].headers["x-tcx-unrouted-exchange"] == settings.commands_exchange
    output = crm.output()
    assert "reconnecting" not in output
    assert output.count("nobody listens for desk.nobody-here.popup") == 1
    assert "outcome=pop-unrouted" in output
    assert elapsed < 20


def test_an_impossible_date_is_dead_lettered_on_the_first_attempt(
    analytics: Service, broker: Broker, settings: Settings
) -> None:
    body = json.loads(call_message(settings, "started", "inbound", "feb30", T0, "1").body)
    body["occurred_at"] = "2026-02-30T10:00:00.000000Z"
    send(
        broker,
        settings,
        OutgoingMessage(
            f"call.started.inbound.{settings.desk}", json.dumps(body).encode(), "feb30", "call.started", 0
        ),
    )
    headers = dead_letters(broker, settings, "analytics", 1)["feb30"]
    assert headers["x-tcx-attempts"] == 1
    assert "not a possible date-time" in str(headers["x-tcx-reason"])
    assert "retry" not in analytics.output()


def test_oversize_bodies_and_bad_caller_ids_are_dead_lettered_with_the_reason(
    analytics: Service, broker: Broker, settings: Settings
) -> None:
    def event(call_id: str, caller_id: str) -> bytes:
        body = json.loads(call_message(settings, "started", "inbound", call_id, T0, "1").body)
        body["caller_id"] = caller_id
        return json.dumps(body).encode()

    key = f"call.started.inbound.{settings.desk}"
    send(
        broker,
        settings,
        OutgoingMessage(key, event("huge", "7" * 10_000_000), "huge", "call.started", 0),
        OutgoingMessage(key, event("long", "7" * 200), "long", "call.started", 0),
        OutgoingMessage(key, event("esc", "\x1b[2J\x07+41791234567\u202e"), "esc", "call.started", 0),
        call_message(settings, "started", "inbound", "fine", T0, "1"),
    )
    reasons = {k: str(v["x-tcx-reason"]) for k, v in dead_letters(broker, settings, "analytics", 3).items()}
    assert reasons["huge"].startswith("oversize: the body has 100")
    assert "caller_id has 200 characters, over the maximum of 128" in reasons["long"]
    assert "holds control characters" in reasons["esc"]
    wait_until(lambda: [r["call_id"] for r in analytics_rows(settings)] == ["fine"])


def test_a_launch_with_control_characters_or_a_long_caller_id_is_published_as_invalid(
    env: dict[str, str], events_tap: Tap, settings: Settings
) -> None:
    for caller in ("\x1b]0;owned\x07", "0" * 129):
        done = run_notify(env, "/N:S", f"/C:{caller}", "/T:I", "/I:77")
        assert done.returncode == 2, done.stderr
        delivery = events_tap.get()
        assert delivery is not None
        assert delivery.routing_key == f"call.invalid.{settings.desk}"
        body = json.loads(delivery.body)
        assert body["caller_id"] == caller  # the audit trail keeps what was given
        assert body["call_id"] == "77"
        assert "caller id /C:" in body["reason"]
        assert "\x1b" not in done.stderr


def test_an_operator_error_stops_a_consumer_with_one_line(env: dict[str, str], broker_url: str) -> None:
    bad = {**env, "TCX_BRIDGE_AMQP_URL": broker_url.replace("guest:guest", "guest:wrong")}
    started = time.monotonic()
    done = run_cli(bad, "consume", "analytics", timeout=30)
    assert time.monotonic() - started < 10
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: connect to 127.0.0.1:5672: the broker refused the login (ACCESS_REFUSED)")
    assert "Traceback" not in done.stderr

    vhost = {**env, "TCX_BRIDGE_AMQP_URL": broker_url.rsplit("/", 1)[0] + "/no-such-vhost"}
    done = run_cli(vhost, "topology", "declare", timeout=30)
    assert done.returncode == 1
    assert "NOT_ALLOWED" in done.stderr.strip().splitlines()[-1]


def test_a_queue_type_mismatch_stops_with_how_to_migrate(
    env: dict[str, str], broker: Broker, settings: Settings
) -> None:
    assert run_cli(env, "topology", "declare").returncode == 0  # classic queues, as before quorum
    started = time.monotonic()
    done = run_cli({**env, "TCX_BRIDGE_QUORUM": "true"}, "consume", "analytics", timeout=30)
    assert time.monotonic() - started < 10
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    queue = settings.dead_queue(
        "analytics"
    )  # the first queue it declares (the exchanges exist: checked only)
    assert last.startswith(
        f"Error: queue '{queue}' exists as a classic queue but the settings ask for a "
        "quorum queue (quorum=true); either set TCX_BRIDGE_QUORUM=false, or migrate:"
    )
    assert f"rabbitmqctl delete_queue {queue}" in last


def test_notify_with_an_unwritable_log_still_publishes_and_exits_0(
    env: dict[str, str], events_tap: Tap, settings: Settings
) -> None:
    (settings.log_dir / "notify.log").mkdir(parents=True)  # cannot be opened as a file
    done = run_notify(env, "/N:S", "/C:0791234567", "/T:I", "/I:9")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert events_tap.get() is not None


def test_notify_that_can_neither_publish_nor_store_says_lost_once(
    env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "a-file"
    data.write_text("not a directory")
    broken = {
        **env,
        "TCX_BRIDGE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F",
        "TCX_BRIDGE_DATA_DIR": str(data),
    }
    done = run_notify(broken, "/N:S", "/C:0791234567", "/T:I", "/I:9", "/X:\n")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("LOST {")
    event = json.loads(lines[0][len("LOST ") : lines[0].rindex("} (") + 1])
    assert (event["kind"], event["call_id"], event["caller_id"]) == ("started", "9", "0791234567")
    assert "Traceback" not in done.stderr


def test_an_orphan_left_by_a_killed_launch_is_published_by_spool_flush(
    env: dict[str, str], events_tap: Tap, settings: Settings
) -> None:
    outbox = Outbox(settings.outbox_dir)
    message = call_message(settings, "ended", "inbound", "orphan", T0)
    outbox.put(message)
    stored = outbox.paths()[0]
    orphan = settings.outbox_dir / ".tmp-0123456789abcdef"
    stored.rename(orphan)  # as if killed between the fsync and the rename
    incomplete = settings.outbox_dir / ".tmp-fedcba9876543210"
    incomplete.write_bytes(orphan.read_bytes()[:40])
    old = time.time() - 3600
    for path in (orphan, incomplete):
        import os

        os.utime(path, (old, old))
    listed = run_cli(env, "spool", "list")
    assert "orphan" in listed.stdout
    done = run_cli(env, "spool", "flush")
    assert done.returncode == 0, done.stderr
    assert "flushed 1 event(s)" in done.stdout
    delivery = events_tap.get()
    assert delivery is not None
    assert delivery.message_id == message.message_id
    assert not orphan.exists()
    assert not incomplete.exists()


def test_spool_flush_on_a_fresh_broker_declares_the_events_exchange(
    env: dict[str, str], broker: Broker, settings: Settings
) -> None:
    """The pipelined replay meets a missing exchange (404) the way a launch does: it declares it."""
    assert not broker.exchange_exists(settings.exchange)
    outbox = Outbox(settings.outbox_dir)
    for n in range(3):
        outbox.put(call_message(settings, "started", "inbound", f"fresh-{n}", T0, "1"))
    done = run_cli(env, "spool", "flush")
    assert done.returncode == 0, done.stderr
    assert "flushed 3 event(s)" in done.stdout
    assert broker.exchange_exists(settings.exchange)
    assert outbox.paths() == []
