# ruff: noqa: F811  # the fixtures imported from test_access_integration are parameters here
"""Attacks on least privilege after issue 19, each run as the attacker would: with a generated user's rights.

On a broker node of this module's own (``node`` of test_access_integration: never
the shared one), with ``tcx-bridge access definitions`` imported and the topology
declared by an admin. The first tests are attacks that worked before their fix;
the last is a table of attacks that the broker or the bridge refuse.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import pika.data
import pytest

from bridge import events
from bridge.dial import ResultWatch, request_dial
from bridge.errors import BrokerRefusedError, BrokerRejectedError
from bridge.topology import again_exchange, dial_results_queue, history_queue, retry_exchange
from bridge.transport import Broker, OutgoingMessage
from consumers.store.core import open_store
from tests.conftest import Service, Tap, run_cli, run_notify, start_service, wait_until
from tests.test_access_integration import (  # noqa: F401  # fixtures
    DeskB,
    Rights,
    admin,
    desk_b,
    dial_body,
    event_message,
    imported,
    node,
    own_env,
    rights,
)

pytestmark = pytest.mark.integration


class RawField(bytes):
    """A header value sent as these exact bytes (its AMQP type tag first)."""


@contextmanager
def raw_fields() -> Iterator[None]:
    """Let pika send RawField header values as they are (what a hostile client of any library can send)."""
    encode = pika.data.encode_value

    def encode_value(pieces: list[bytes], value: Any) -> int:
        if isinstance(value, RawField):
            pieces.append(bytes(value))
            return len(value)
        return int(encode(pieces, value))

    pika.data.encode_value = encode_value
    try:
        yield
    finally:
        pika.data.encode_value = encode


# a timestamp past the year 9999: RabbitMQ relays it, pika raised OverflowError decoding it and dropped
# the connection; the message came back at each reconnect, so one publish jammed the queue for good
POISON = {"x-poison": RawField(b"T" + struct.pack(">Q", 2**64 - 1))}


def nested(depth: int) -> RawField:
    """Arrays in arrays, deeper than Python's recursion limit (RecursionError: the consumer process died)."""
    inner = b""
    for _ in range(depth):
        inner = b"A" + struct.pack(">I", len(inner)) + inner
    return RawField(inner)


def publish_as(rights: Rights, user: str, exchange: str, message: OutgoingMessage) -> None:
    settings = rights.settings_of(user)
    with raw_fields(), Broker(settings.amqp_url, sign=True) as broker:
        broker.publish(exchange, message)


def test_a_header_pika_cannot_decode_jams_no_consumer(
    rights: Rights,
    admin: Broker,
    services: list[Service],
    tmp_path: Path,
) -> None:
    """desk-A, on its own key, with one header of a hostile value: crm and analytics go on. (And a 1 MB
    body is kept only in part in each consumer's dead letters.)"""
    desk_user = f"desk-{rights.desk}"
    a = rights.settings_of(desk_user)
    server = {"TCX_BRIDGE_DATA_DIR": str(tmp_path / "server")}
    consumers = {
        name: start_service(
            services, rights.env_of(f"tcx-{name}", **server), admin, a.queue(name), "consume", name
        )
        for name in ("crm", "analytics")
    }
    poison = event_message(rights.desk, rights.desk, "poison")._replace(headers=POISON)
    publish_as(rights, desk_user, a.exchange, poison)
    deep = event_message(rights.desk, rights.desk, "deep")._replace(headers={"x-deep": nested(3000)})
    publish_as(rights, desk_user, a.exchange, deep)
    huge = event_message(rights.desk, rights.desk, "huge")._replace(body=b"x" * 1_000_000)
    publish_as(rights, desk_user, a.exchange, huge)
    publish_as(rights, desk_user, a.exchange, event_message(rights.desk, rights.desk, "after-poison"))
    for name, service in consumers.items():
        dead = admin.get(a.dead_queue(name), timeout=15)
        assert dead is not None, name + service.output()
        reason = dead.headers["x-tcx-reason"]
        assert reason.startswith("undecodable: the message's headers cannot be decoded"), reason
        dead = admin.get(a.dead_queue(name), timeout=15)
        assert dead is not None
        assert "(RecursionError" in dead.headers["x-tcx-reason"]
        big = admin.get(a.dead_queue(name), timeout=15)  # every consumer's copy of a 1 MB body: 64 KiB
        assert big is not None
        assert (len(big.body), big.headers["x-tcx-body-bytes"]) == (64 * 1024, 1_000_000)
        wait_until(lambda s=service: s.output().count(" outcome=") == 4, timeout=15)  # and the next one
        assert "broker lost" not in service.output(), name
    calls = run_cli({**rights.env, **server}, "report", "--calls", "--format", "json")
    assert [c["call_id"] for c in json.loads(calls.stdout or "[]")] == ["after-poison"]


def test_a_dial_request_with_a_hostile_header_gets_a_result_and_jams_no_agent(
    rights: Rights,
    admin: Broker,
    desk_b: DeskB,
) -> None:
    """tcx-dialer (or any CRM server on its user) could stop desk B's agent for good with one request."""
    dialer = rights.settings_of("tcx-dialer")
    results = Tap(admin, dialer, dialer.exchange, "dial.#")
    request = OutgoingMessage(
        f"desk.{rights.other}.dial",
        dial_body("poison-1", "044 123 45 67"),
        "poison-1",
        "dial",
        0,
        headers=POISON,
    )
    publish_as(rights, "tcx-dialer", dialer.commands_exchange, request)
    found = results.get(timeout=15)
    assert found is not None, desk_b.agent.output()
    result = json.loads(found.body)
    assert (result["request_id"], result["status"]) == ("poison-1", "rejected")
    assert "headers cannot be decoded" in result["reason"]
    assert desk_b.assistant.calls() == []
    with ResultWatch(dialer) as watch:  # the agent still dials
        sent = request_dial(dialer, "044 123 45 67", desk=rights.other, broker=watch.broker)
        answer = watch.wait(sent.request_id, timeout=15, desk=rights.other)
    assert answer is not None
    assert answer.status in ("dialed", "confirmed")
    assert "broker lost" not in desk_b.agent.output()


def test_dial_wait_believes_no_other_desk_and_no_hostile_header(
    rights: Rights,
    admin: Broker,
    desk_b: DeskB,
) -> None:
    """desk-A may publish results on dial.*.A: named for its own desk, with B's request_id, it was believed.

    A CRM that picks its request ids (ticket numbers) makes them known; desk A's forged
    "confirmed" (and a result with a header pika cannot decode, which used to end
    the watch) come before B's real answer: the watch passes over both.
    """
    dialer = rights.settings_of("tcx-dialer")
    forged = events.DialResult(
        request_id="ticket-4711", status="confirmed", desk=rights.desk, number="0901123456", reason=None,
        occurred_at=events.utc_now(),
    )  # fmt: skip
    body = events.ENCODER.encode(forged)
    with ResultWatch(dialer) as watch:
        for headers in (POISON, None):
            message = OutgoingMessage(f"dial.confirmed.{rights.desk}", body, "f", "dial", 0, headers=headers)
            publish_as(rights, f"desk-{rights.desk}", dialer.exchange, message)
        request_dial(
            dialer, "+41 901 123 456", desk=rights.other, broker=watch.broker, request_id="ticket-4711"
        )
        answer = watch.wait("ticket-4711", timeout=15, desk=rights.other)
    assert answer is not None
    assert (answer.desk, answer.status) == (rights.other, "rejected")  # premium rate: B's real answer
    assert desk_b.assistant.calls() == []


def test_a_dial_by_extension_reaches_only_the_desk_of_that_extension(
    imported: Rights,
    admin: Broker,
) -> None:
    """topology declare bound ext.<the admin's own extension>.* to every desk: tcx-dialer's ext.101.dial
    for desk A made desk B dial too. Each desk now gets the extension given with it, or none."""
    rights = imported
    declared = run_cli(
        rights.env, "topology", "declare", "--desk", f"{rights.desk},101", "--desk", rights.other
    )
    assert declared.returncode == 0, declared.stderr
    dialer = rights.settings_of("tcx-dialer")
    request_dial(dialer, "044 123 45 67", extension="101")
    a_queue, b_queue = dialer.queue(f"desk.{rights.desk}"), dialer.queue(f"desk.{rights.other}")
    wait_until(lambda: admin.queue_info(a_queue) == (1, 0), timeout=10)
    assert admin.queue_info(b_queue) == (0, 0)
    twice = run_cli(
        rights.env, "topology", "declare", "--desk", f"{rights.desk},101", "--desk", f"{rights.other},101"
    )
    assert twice.returncode == 1
    assert "extension '101' is given to desk" in twice.stderr.strip().splitlines()[-1]


def test_a_consumer_whose_queue_goes_away_says_so_instead_of_waiting_for_good(
    rights: Rights, admin: Broker, services: list[Service]
) -> None:
    """The broker cancels the consumer of a queue that is deleted or crashes (see the next test): the
    runner used to wait on the channel for good, consuming nothing, looking healthy."""
    settings = rights.settings_of("tcx-analytics")
    service = start_service(
        services, rights.env_of("tcx-analytics"), admin, settings.queue("analytics"), "consume", "analytics"
    )
    admin.delete_queue(settings.queue("analytics"))
    assert service.process.wait(30) == 1
    lines = service.output().strip().splitlines()
    assert "the broker cancelled the consumer" in service.output()
    assert lines[-1].startswith(f"Error: queue {settings.queue('analytics')!r} does not exist")


def test_a_forged_x_death_does_not_take_a_queue_down(
    rights: Rights, admin: Broker, services: list[Service], tmp_path: Path
) -> None:
    """desk-A, on its own key: persistent events with x-death ["x"] that expire at once, behind a backlog.
    RabbitMQ before 4.0 crashes a classic queue that dead-letters such a message (and again at each
    restart), so the crm handled nothing more; work queues now have no dead-letter exchange (retries
    are published by the consumer itself), so the forged ones just expire and the good event arrives."""
    desk_user = f"desk-{rights.desk}"
    a = rights.settings_of(desk_user)
    env = rights.env_of("tcx-crm", TCX_BRIDGE_DATA_DIR=str(tmp_path / "server"), TCX_BRIDGE_PREFETCH="1")
    crm = start_service(services, env, admin, a.queue("crm"), "consume", "crm")
    backlog = [event_message(rights.desk, rights.desk, f"busy-{n}") for n in range(40)]
    forged = [
        event_message(rights.desk, rights.desk, f"xd-{n}")._replace(
            headers={"x-death": ["x"]}, expiration_ms=0
        )
        for n in range(40)
    ]
    with Broker(a.amqp_url, sign=True) as attacker:
        attacker.publish_many(a.exchange, backlog + forged)  # nacked from where the queue crashed
    good = event_message(rights.desk, rights.desk, "after-x-death")
    with Broker(a.amqp_url, sign=True) as desk:
        desk.publish(a.exchange, good)
    wait_until(lambda: f"id={good.message_id} " in crm.output(), timeout=10)


def refused_attacks(rights: Rights) -> list[tuple[str, str, Callable[[Broker], object]]]:
    """(user, attack, action) beyond test_access_integration's table: each must be refused."""
    a, b = rights.desk, rights.other
    s = rights.settings_of("tcx-crm")

    def publish(exchange: str, key: str, body: bytes = b"{}", **more: Any) -> Callable[[Broker], object]:
        message = OutgoingMessage(key, body, "attack", "x", 0, **more)
        return lambda broker: broker.publish(exchange, message)

    def channel(action: Callable[[Any], object]) -> Callable[[Broker], object]:
        return lambda broker: action(broker.channel)

    return [
        ("desk-A", "unroutable call kind (fills tcx.unrouted)", publish(s.exchange, f"call.evil.inbound.{a}")),
        ("desk-A", "unroutable dial status", publish(s.exchange, f"dial.evil.{a}")),
        ("desk-A", "user_id of desk B", publish(s.exchange, f"call.started.inbound.{a}", user_id=f"desk-{b}")),
        ("desk-A", "exchange-to-exchange bind events->dead", channel(lambda c: c.exchange_bind(s.dead_exchange, s.exchange, "#"))),
        ("desk-A", "purge crm's queue", channel(lambda c: c.queue_purge(s.queue("crm")))),
        ("desk-A", "exclusive consumer on crm's queue", channel(lambda c: c.basic_consume(s.queue("crm"), print, exclusive=True))),
        ("desk-A", "publish into crm's retry exchange", publish(retry_exchange(s, "crm"), "call.started.inbound.x")),
        ("tcx-crm", "publish into desk B's retries", publish(retry_exchange(s, f"desk.{b}"), f"desk.{b}.dial")),
        ("tcx-crm", "publish into its own again exchange", publish(again_exchange(s, "crm"), "call.x")),
        ("tcx-crm", "pop by extension", publish(s.commands_exchange, "ext.101.popup")),
        ("tcx-crm", "pop with an extra key segment", publish(s.commands_exchange, f"desk.{b}.x.popup")),
        ("tcx-crm", "bind its queue to the commands", channel(lambda c: c.queue_bind(s.queue("crm"), s.commands_exchange, "#"))),
        ("tcx-dialer", "pop", publish(s.commands_exchange, f"desk.{b}.popup")),
        ("tcx-dialer", "purge the dial results", channel(lambda c: c.queue_purge(dial_results_queue(s)))),
        ("tcx-analytics", "crm's dead key", publish(s.dead_exchange, "crm")),
        ("tcx-wallboard", "read its own dead letters", channel(lambda c: c.basic_get(s.dead_queue("wallboard")))),
        ("tcx-history", "write into the history by name", publish("", history_queue(s))),
        ("tcx-history", "purge the history", channel(lambda c: c.queue_purge(history_queue(s)))),
        ("tcx-history", "read crm's queue", channel(lambda c: c.basic_get(s.queue("crm")))),
        ("tcx-crm", "delete the history", channel(lambda c: c.queue_delete(history_queue(s)))),
        ("desk-A", "read the history", channel(lambda c: (c.basic_qos(prefetch_count=1), c.basic_consume(history_queue(s), print, arguments={"x-stream-offset": "first"})))),
        ("tcx-dialer", "read the history", channel(lambda c: (c.basic_qos(prefetch_count=1), c.basic_consume(history_queue(s), print, arguments={"x-stream-offset": "first"})))),
        ("desk-A", "write into the history by name", publish("", history_queue(s))),
        ("tcx-callbacks", "B's dial result (moves a task's dial)", publish(s.exchange, f"dial.confirmed.{b}")),
        ("tcx-webhooks", "read the history", channel(lambda c: (c.basic_qos(prefetch_count=1), c.basic_consume(history_queue(s), print, arguments={"x-stream-offset": "first"})))),
        ("tcx-privacy", "read the history", channel(lambda c: (c.basic_qos(prefetch_count=1), c.basic_consume(history_queue(s), print, arguments={"x-stream-offset": "first"})))),
        ("tcx-privacy", "purge the history", channel(lambda c: c.queue_purge(history_queue(s)))),
        ("tcx-history", "privacy.forget", publish(s.commands_exchange, "privacy.forget")),
        ("tcx-history", "a call event", publish(s.exchange, f"call.started.inbound.{b}")),
        ("tcx-history", "a callback event", publish(s.exchange, "callback.closed")),
        ("tcx-history", "a dial request", publish(s.commands_exchange, f"desk.{b}.dial")),
        ("tcx-admin", "publish to amq.default", publish("", s.queue(f"desk.{b}"))),
        ("tcx-admin", "a queue outside the namespace", channel(lambda c: c.queue_declare(f"{s.namespace}evil"))),
    ]  # fmt: skip


def test_attacks_the_broker_refuses(rights: Rights) -> None:
    allowed_anyway = []
    for user, attack, action in refused_attacks(rights):
        login = user.replace("desk-A", f"desk-{rights.desk}")
        with Broker(rights.settings_of(login).amqp_url, sign=False) as broker:
            try:
                action(broker)
            except (BrokerRefusedError, BrokerRejectedError):
                continue
            except pika.exceptions.AMQPError:  # a raw channel call (not mapped by transport)
                continue
            allowed_anyway.append((login, attack))
    assert allowed_anyway == []


def test_the_history_is_read_by_its_readers(rights: Rights, admin: Broker) -> None:
    """tcx-history reads it (history); a consumer's user backfills from it (consume --from)."""
    desk = rights.settings_of(f"desk-{rights.desk}")
    with Broker(desk.amqp_url, sign=True) as publisher:
        publisher.publish(desk.exchange, event_message(rights.desk, rights.desk, "kept-in-history"))
    shown = run_cli(rights.env_of("tcx-history"), "history", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert '"call_id":"kept-in-history"' in shown.stdout
    backfilled = run_cli(
        rights.env_of("tcx-analytics"), "consume", "analytics", "--from", "first", "--idle-exit", "1"
    )
    assert backfilled.returncode == 0, backfilled.stderr
    assert "backfill done" in backfilled.stderr


# The attacks on issues 22-26 (webhooks, history, callbacks, privacy, the desk fast path) -------------


def test_a_pop_cannot_carry_a_forget(rights: Rights, admin: Broker, desk_b: DeskB) -> None:
    """tcx-crm may send pops only: a privacy.forget body on desk B's pop key, with headers naming
    privacy.forget and tcx-privacy, reaches B's agent as a (bad) pop, never as an erasure."""
    crm = rights.settings_of("tcx-crm")
    request = events.ForgetRequest(
        request_id="attack-forget", number="+41791234577", requested_at=events.utc_now()
    )
    forged = OutgoingMessage(
        f"desk.{rights.other}.popup", events.ENCODER.encode(request), "attack-forget", "privacy.forget", 0,
        headers={"x-tcx-routing-key": "privacy.forget", "x-tcx-user-id": "tcx-privacy"},
    )  # fmt: skip
    publish_as(rights, "tcx-crm", crm.commands_exchange, forged)
    wait_until(lambda: "id=attack-forget" in desk_b.agent.output(), timeout=15)
    assert f"id=attack-forget key=desk.{rights.other}.popup" in desk_b.agent.output()
    assert "privacy.forget attack-forget" not in desk_b.agent.output()  # the line an erasure writes
    assert "outcome=forget" not in desk_b.agent.output()


CALLER = "+41791234577"


def callback_task(settings: Any) -> dict[str, Any] | None:
    store = open_store(settings, "callbacks")
    try:
        row = store.execute("SELECT * FROM callbacks WHERE number_e164 = ?", (CALLER,)).fetchone()
        return dict(row) if row is not None else None
    finally:
        store.close()


def test_a_desk_cannot_use_up_the_attempts_of_another_desks_callback(
    rights: Rights, admin: Broker, services: list[Service], tmp_path: Path
) -> None:
    """desk-A, on its own keys: an unanswered outbound call to the caller desk B was calling back counted
    as the task's attempt; with callback_max_attempts = 1 it closed B's task as unreached. (Then a
    privacy.forget reaches the callbacks consumer: its queue was not bound to it.)"""
    server = {"TCX_BRIDGE_DATA_DIR": str(tmp_path / "server"), "TCX_BRIDGE_CALLBACK_MAX_ATTEMPTS": "1"}
    callbacks = rights.settings_of("tcx-callbacks", **server)
    consumer = start_service(
        services, rights.env_of("tcx-callbacks", **server), admin, callbacks.queue("callbacks"),
        "consume", "callbacks",
    )  # fmt: skip
    b_env = rights.env_of(
        f"desk-{rights.other}", TCX_BRIDGE_DESK=rights.other, TCX_BRIDGE_DATA_DIR=str(tmp_path / "b")
    )
    for argv in (("/N:S", f"/C:{CALLER}", "/T:I", "/I:missed-1"), ("/N:E", "/T:I", "/I:missed-1")):
        assert run_notify(b_env, *argv).returncode == 0
    wait_until(lambda: callback_task(callbacks) is not None, timeout=15)
    task_id = str(callback_task(callbacks)["id"])  # type: ignore[index]
    dialer = rights.env_of("tcx-dialer", **server)
    dialed = run_cli(dialer, "callbacks", "dial", task_id, "--desk", rights.other)  # no agent on B: in flight
    assert dialed.returncode == 0, dialed.stderr

    a_env = rights.env_of(f"desk-{rights.desk}", TCX_BRIDGE_DATA_DIR=str(tmp_path / "a"))
    for argv in (("/N:S", "/T:O", f"/I:{CALLER}"), ("/N:E", "/T:O", f"/I:{CALLER}")):  # rings out on A
        assert run_notify(a_env, *argv).returncode == 0
    wait_until(lambda: consumer.output().count(" outcome=") >= 4, timeout=15)
    task = callback_task(callbacks)
    assert task is not None
    assert (task["status"], task["attempts"], task["dial_state"]) == ("open", 0, "dialing"), consumer.output()

    # and the callbacks consumer is bound to privacy.forget (it was not): the task keeps no number
    from consumers.privacy import command
    from consumers.privacy.forms import forms_of

    request_id = command.publish(rights.settings_of("tcx-privacy"), forms_of(CALLER, "CH"))
    wait_until(lambda: f"privacy.forget {request_id} from tcx-privacy" in consumer.output(), timeout=15)
    assert callback_task(callbacks) is None  # its number_e164 is a marker now


def test_the_history_shows_no_desk_an_event_another_desk_forged(rights: Rights) -> None:
    """desk-A, on its own key, named desk B in the body, passed a callback event off as a call, and sent one
    unsigned: the consumers dead-letter all three, but history --desk B and --call showed the first as B's
    call, the table the callback as the callbacks consumer's; now only B's own is B's, the rest spoofed."""
    a, b = rights.settings_of(f"desk-{rights.desk}"), rights.settings_of(f"desk-{rights.other}")
    callback = events.CallbackOpened(
        event_id=events.new_event_id(), task_id=1, number=CALLER, number_e164=CALLER, desk=rights.desk,
        missed_at=events.utc_now(), due_at=events.utc_now(), occurred_at=events.utc_now(),
    )  # fmt: skip
    posing = event_message(rights.desk, rights.desk)._replace(body=events.ENCODER.encode(callback))
    with Broker(a.amqp_url, sign=True) as attacker:
        attacker.publish(a.exchange, event_message(rights.desk, rights.other, "forged-signed"))
        attacker.publish(a.exchange, posing)
    with Broker(a.amqp_url, sign=False) as attacker:
        attacker.publish(a.exchange, event_message(rights.desk, rights.desk, "unsigned"))
    with Broker(b.amqp_url, sign=True) as desk_b:
        desk_b.publish(b.exchange, event_message(rights.other, rights.other, "genuine"))
    reader = rights.env_of("tcx-history")
    shown = run_cli(reader, "history", "--desk", rights.other, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert [json.loads(line)["event"]["call_id"] for line in shown.stdout.splitlines()] == ["genuine"]
    table = run_cli(reader, "history").stdout.splitlines()
    assert [re.split(r"\s{2,}", line)[-1] for line in table if "spoofed" in line] == [
        f"spoofed: a 'call.started.inbound.{rights.other}' event under key 'call.started.inbound.{rights.desk}'",
        f"spoofed: a 'callback.opened' event under key 'call.started.inbound.{rights.desk}'",
        "spoofed: no user_id, the broker vouches for no sender",
    ]
