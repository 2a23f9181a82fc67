"""Least privilege and TLS, on a broker node of the tests' own (never the shared one).

The node has a TLS listener with a certificate for ``localhost`` from a CA made
here; ``tcx-bridge access definitions`` is imported into it with
``rabbitmqctl import_definitions``; every process then connects as its own user.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from bridge import events
from bridge.config import Settings, load_settings
from bridge.errors import BrokerRefusedError
from bridge.transport import Broker, Delivery, OutgoingMessage
from tests.cluster import LocalCluster, rabbitmq_available
from tests.conftest import (
    FakeAssistant,
    Service,
    Tap,
    free_port,
    run_cli,
    run_notify,
    start_service,
    wait_until,
    wallboard_tiles,
)

pytestmark = pytest.mark.integration


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.pem"))  # fmt: skip
    return directory / "ca.pem"


def make_server_cert(ca: Path, directory: Path, host: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (directory / n for n in ("server.key", "server.csr", "server.pem", "san.ext"))
    ext.write_text(f"subjectAltName=DNS:{host}\n")
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(csr)
    )
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca.with_suffix(".key")),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return cert, key


class Node(NamedTuple):
    cluster: LocalCluster
    tls_port: int
    ca: Path
    other_ca: Path

    @property
    def admin_url(self) -> str:
        return self.cluster.url(0)

    def url(self, user: str, password: str) -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.cluster.port}/%2F"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One RabbitMQ node of this module's own, with a TLS listener (certificate for localhost)."""
    if not rabbitmq_available():
        pytest.skip("no rabbitmq-server here to start a broker node of the tests' own")
    certs = tmp_path_factory.mktemp("certs")
    ca = make_ca(certs / "ca", "tcx test CA")
    other_ca = make_ca(certs / "other", "another CA")
    cert, key = make_server_cert(ca, certs / "ca", "localhost")
    port = free_port()
    cluster = LocalCluster(
        1,
        extra_config=(
            f"listeners.ssl.default = 127.0.0.1:{port}\n"
            f"ssl_options.cacertfile = {ca}\nssl_options.certfile = {cert}\nssl_options.keyfile = {key}\n"
            "ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n"
        ),
    )
    try:
        cluster.start()
        yield Node(cluster, port, ca, other_ca)
    finally:
        cluster.close()


class Rights(NamedTuple):
    """The imported users of one test: their passwords and an environment for each."""

    node: Node
    env: dict[str, str]
    passwords: dict[str, str]
    desk: str
    other: str

    def env_of(self, user: str, **more: str) -> dict[str, str]:
        return {**self.env, "TCX_BRIDGE_AMQP_URL": self.node.url(user, self.passwords[user]), **more}

    def settings_of(self, user: str, **more: str) -> Settings:
        return load_settings(environ=self.env_of(user, **more)).settings


@pytest.fixture
def own_env(env: dict[str, str], node: Node) -> dict[str, str]:
    return {**env, "TCX_BRIDGE_AMQP_URL": node.admin_url}


@pytest.fixture
def admin(own_env: dict[str, str]) -> Iterator[Broker]:
    with Broker(own_env["TCX_BRIDGE_AMQP_URL"]) as broker:
        yield broker


@pytest.fixture
def imported(node: Node, own_env: dict[str, str], desk: str, tmp_path: Path) -> Rights:
    """The generated document imported (nothing declared yet)."""
    other = f"{desk}b"
    secrets_file, document = tmp_path / "secrets.tsv", tmp_path / "definitions.json"
    made = run_cli(
        own_env, "access", "definitions", "--desk", f"{desk},101", "--desk", other,
        "--password-file", str(secrets_file), "-o", str(document),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    node.cluster.ctl(0, "import_definitions", str(document))
    passwords = dict(line.split("\t") for line in secrets_file.read_text().splitlines())
    return Rights(node, own_env, passwords, desk, other)


@pytest.fixture
def rights(imported: Rights) -> Rights:
    """... and the topology declared once by an admin (guest)."""
    declared = run_cli(imported.env, "topology", "declare", "--desk", imported.desk, "--desk", imported.other)
    assert declared.returncode == 0, declared.stderr
    return imported


def test_without_the_topology_each_user_says_what_is_missing(imported: Rights) -> None:
    """Nobody but an admin declares exchanges: the others check them and name the missing right."""
    exchange = f"{load_settings(environ=imported.env).settings.namespace}.unrouted"  # the first one it checks
    consumer = run_cli(imported.env_of("tcx-analytics"), "consume", "analytics", timeout=30)
    assert consumer.returncode == 1
    assert consumer.stderr.strip().splitlines()[-1] == (
        f"Error: exchange '{exchange}' does not exist and user 'tcx-analytics' may not declare it "
        "(no configure right on it); run tcx-bridge topology declare as an admin first"
    )
    notify = run_notify(imported.env_of(f"desk-{imported.desk}"), "/N:S", "/C:0791234567", "/T:I", "/I:early")
    assert notify.returncode == 0  # kept in the outbox until the topology exists
    assert "may not declare it (no configure right on it)" in notify.stderr.strip().splitlines()[-1]


def event_message(desk: str, body_desk: str, call_id: str = "x1") -> OutgoingMessage:
    event = events.CallEvent(
        event_id=events.new_event_id(),
        kind="started",
        direction="inbound",
        call_id=call_id,
        caller_id="0791234567",
        desk=body_desk,
        extension="101",
        occurred_at=events.utc_now(),
        argv=(),
    )
    return OutgoingMessage(
        f"call.started.inbound.{desk}", events.ENCODER.encode(event), event.event_id, "call", 0
    )


def test_a_desk_speaks_only_for_itself(rights: Rights, admin: Broker, tmp_path: Path) -> None:
    settings = rights.settings_of(f"desk-{rights.desk}")
    tap = Tap(admin, settings, settings.exchange, "call.#")
    own = run_notify(rights.env_of(f"desk-{rights.desk}"), "/N:S", "/C:0791234567", "/T:I", "/I:own-1")
    assert own.returncode == 0, own.stderr
    arrived = tap.get(timeout=10)
    assert arrived is not None
    assert arrived.user_id == f"desk-{rights.desk}"  # the broker vouched for it
    assert json.loads(arrived.body)["desk"] == rights.desk

    # A's credentials, B's desk: the broker refuses the routing key; the event waits in the outbox
    spoof_env = rights.env_of(f"desk-{rights.desk}", TCX_BRIDGE_DESK=rights.other)
    spoof = run_notify(spoof_env, "/N:S", "/C:0791234567", "/T:I", "/I:spoof-1")
    assert spoof.returncode == 0, spoof.stderr
    line = spoof.stderr.strip().splitlines()[-1]
    assert "ACCESS_REFUSED" in line
    assert f"call.started.inbound.{rights.other}" in line
    assert len(list(Path(spoof_env["TCX_BRIDGE_DATA_DIR"], "outbox").glob("*.json"))) == 1
    assert tap.get(timeout=1) is None

    with Broker(settings.amqp_url) as desk_a:
        with pytest.raises(BrokerRefusedError, match="ACCESS_REFUSED"):
            desk_a.publish(settings.exchange, event_message(rights.other, rights.other))
        with pytest.raises(BrokerRefusedError, match="ACCESS_REFUSED"):
            desk_a.get(settings.queue("crm"), timeout=1)
        with pytest.raises(BrokerRefusedError, match="ACCESS_REFUSED"):
            desk_a.get(settings.queue(f"desk.{rights.other}"), timeout=1)
        request = OutgoingMessage(f"desk.{rights.desk}.dial", b'{"number": "0900123456"}', "d1", "dial", 0)
        with pytest.raises(BrokerRefusedError, match="ACCESS_REFUSED"):
            desk_a.publish(settings.commands_exchange, request)
        with pytest.raises(BrokerRefusedError, match="ACCESS_REFUSED"):  # no listening to B's commands
            desk_a.bind_queue(
                settings.queue(f"desk.{rights.desk}"), settings.commands_exchange, f"desk.{rights.other}.*"
            )
        with pytest.raises(BrokerRefusedError, match="ACCESS_REFUSED"):  # no configure right on exchanges
            desk_a.declare_exchange(f"{settings.namespace}.mine", "topic")


def test_every_process_on_its_own_user(
    rights: Rights, admin: Broker, services: list[Service], tmp_path: Path
) -> None:
    """The seed flow: S, C, E in and out, a pop, a dial; and a spoofed event dead-lettered."""
    desk_user = f"desk-{rights.desk}"
    settings = rights.settings_of(desk_user)
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("name,phone\nAnna Muster,079 123 45 67\n")
    server = {"TCX_BRIDGE_DATA_DIR": str(tmp_path / "server")}
    assert run_cli({**rights.env, **server}, "contacts", "import", str(contacts)).returncode == 0
    pops = Tap(admin, settings, settings.commands_exchange, "desk.*.popup")
    results = Tap(admin, settings, settings.exchange, "dial.#")
    callback_events = Tap(admin, settings, settings.exchange, "callback.#")
    for name in ("crm", "analytics", "callbacks"):
        start_service(
            services, rights.env_of(f"tcx-{name}", **server), admin, settings.queue(name), "consume", name
        )
    port = free_port()
    wallboard_env = rights.env_of("tcx-wallboard", **server, TCX_BRIDGE_TIMEZONE="UTC")
    start_service(
        services, wallboard_env, admin, settings.queue("wallboard"), "wallboard", "--port", str(port)
    )
    from tests.test_dialing_integration import installed

    agent_env = rights.env_of(desk_user, TCX_BRIDGE_ASSISTANT=installed("tcx-bridge-fake-assistant"))
    agent = start_service(services, agent_env, admin, settings.queue(f"desk.{rights.desk}"), "agent")

    for argv in (
        ["/N:S", "/C:0791234567", "/T:I", "/I:in-1"],
        ["/N:C", "/T:I", "/I:in-1"],
        ["/N:E", "/T:I", "/I:in-1"],
    ):
        launched = run_notify(rights.env_of(desk_user), *argv)
        assert launched.returncode == 0, launched.stderr
    pop = pops.get(timeout=15)
    assert pop is not None
    assert json.loads(pop.body)["contact"]["name"] == "Anna Muster"

    dialed = run_cli(
        rights.env_of("tcx-dialer"), "dial", "--desk", rights.desk, "0441234567", "--wait", timeout=60
    )
    assert dialed.returncode == 0, dialed.stderr + agent.output()
    assert dialed.stdout.splitlines()[-1].startswith("confirmed 0441234567")
    statuses = [r for r in iter(lambda: results.get(timeout=2), None)]
    assert {r.user_id for r in statuses} == {desk_user}  # the results too are in the desk's name

    with Broker(settings.amqp_url, sign=True) as desk_a:  # allowed key, another desk in the body
        desk_a.publish(settings.exchange, event_message(rights.desk, rights.other, "forged"))
    for name in ("crm", "analytics", "wallboard", "callbacks"):
        dead: Delivery | None = admin.get(settings.dead_queue(name), timeout=15)
        assert dead is not None, name
        assert dead.headers["x-tcx-reason"].startswith(
            f"spoofed: the event is for desk {rights.other!r} but user {desk_user!r} published it"
        )

    def journaled() -> list[str]:
        found = run_cli({**rights.env, **server}, "journal", "--format", "json")
        return [row["call_id"] for row in json.loads(found.stdout or "[]")]

    wait_until(lambda: "in-1" in journaled() and "0441234567" in journaled(), timeout=30)

    wait_until(lambda: wallboard_tiles(port)["answered"] == 1, timeout=15)  # the wallboard, as tcx-wallboard
    calls = json.loads(run_cli({**rights.env, **server}, "report", "--calls", "--format", "json").stdout)
    assert sorted((c["direction"], c["answered"]) for c in calls) == [("inbound", True), ("outbound", True)]
    for name in ("crm", "analytics", "wallboard", f"desk.{rights.desk}"):
        assert admin.queue_info(settings.dead_queue(name)) == (0, 0), name
        assert admin.queue_info(settings.queue(name))[0] == 0  # type: ignore[index]

    # a missed caller, called back by tcx-dialer through callbacks dial; the events in tcx-callbacks' name
    for argv in (["/N:S", "/C:0791112233", "/T:I", "/I:in-2"], ["/N:E", "/T:I", "/I:in-2"]):
        assert run_notify(rights.env_of(desk_user), *argv).returncode == 0
    opened = callback_events.get(timeout=15)
    assert opened is not None
    assert (json.loads(opened.body)["type"], opened.user_id) == ("callback.opened", "tcx-callbacks")
    dialer_env = rights.env_of("tcx-dialer", **server)
    called = run_cli(dialer_env, "callbacks", "dial", "1", "--desk", rights.desk)
    assert called.returncode == 0, called.stderr
    rest = [callback_events.get(timeout=15) for _ in range(2)]
    assert [(json.loads(d.body)["type"], d.user_id) for d in rest if d] == [
        ("callback.assigned", "tcx-callbacks"), ("callback.closed", "tcx-callbacks")]  # fmt: skip
    assert json.loads(rest[1].body)["outcome"] == "reached"  # type: ignore[union-attr]
    assert admin.queue_info(settings.dead_queue("callbacks")) == (0, 0)


@pytest.fixture
def tls_env(own_env: dict[str, str], node: Node) -> dict[str, str]:
    return {
        **own_env,
        "TCX_BRIDGE_AMQP_URL": f"amqps://guest:guest@localhost:{node.tls_port}/%2F",
        "TCX_BRIDGE_CA_FILE": str(node.ca),
    }


def test_tls_end_to_end_notify_consumer_and_agent(
    tls_env: dict[str, str], admin: Broker, services: list[Service], fake_assistant: object
) -> None:
    settings = load_settings(environ=tls_env).settings
    assert run_cli(tls_env, "topology", "declare", "--desk", settings.desk).returncode == 0
    tap = Tap(admin, settings, settings.exchange, "call.#")
    analytics = start_service(services, tls_env, admin, settings.queue("analytics"), "consume", "analytics")
    start_service(services, tls_env, admin, settings.queue(f"desk.{settings.desk}"), "agent")
    done = run_notify(tls_env, "/N:S", "/C:0791234567", "/T:I", "/I:tls-1")
    assert done.returncode == 0, done.stderr
    assert tap.get(timeout=10) is not None
    wait_until(lambda: "outcome=recorded" in analytics.output(), timeout=15)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("other-ca", "is not signed by a CA in CA file '{ca}'"),
        ("other-host", "is for another host name"),
    ],
)
def test_tls_certificate_refused_is_one_line(
    tls_env: dict[str, str], node: Node, case: str, expected: str
) -> None:
    if case == "other-ca":
        bad = {**tls_env, "TCX_BRIDGE_CA_FILE": str(node.other_ca)}
        host = "localhost"
    else:
        bad = {**tls_env, "TCX_BRIDGE_AMQP_URL": f"amqps://guest:guest@127.0.0.1:{node.tls_port}/%2F"}
        host = "127.0.0.1"
    message = expected.format(ca=bad["TCX_BRIDGE_CA_FILE"])
    notify = run_notify(bad, "/N:S", "/C:0791234567", "/T:I", "/I:tls-bad")
    assert notify.returncode == 0  # kept in the outbox
    line = notify.stderr.strip().splitlines()[-1]
    assert f"connect to {host}:{node.tls_port}" in line
    assert message in line
    assert len(list(Path(bad["TCX_BRIDGE_DATA_DIR"], "outbox").glob("*.json"))) == 1
    consumer = run_cli(bad, "consume", "analytics", timeout=30)
    assert consumer.returncode == 1  # an operator must fix it: no reconnect loop
    last = consumer.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: connect to {host}:{node.tls_port}: the broker's TLS certificate")
    assert message in last


def test_a_dial_result_from_another_desks_user_is_ignored(rights: Rights) -> None:
    from bridge.dial import ResultWatch

    dialer = rights.settings_of("tcx-dialer")

    def result(status: str) -> events.DialResult:
        return events.DialResult(
            request_id="r-1", status=status, desk=rights.desk, number="+41441234567", reason=None,  # type: ignore[arg-type]
            occurred_at=events.utc_now(),
        )  # fmt: skip

    def publish(user: str, key_desk: str, body: events.DialResult) -> None:
        settings = rights.settings_of(user)
        with Broker(settings.amqp_url, sign=True) as broker:
            message = OutgoingMessage(
                f"dial.{body.status}.{key_desk}", events.ENCODER.encode(body), "m", "dial", 0
            )
            broker.publish(settings.exchange, message)

    with ResultWatch(dialer) as watch:
        publish(f"desk-{rights.other}", rights.other, result("confirmed"))  # B's key, A's result: forged
        publish(f"desk-{rights.desk}", rights.desk, result("failed"))
        found = watch.wait("r-1", timeout=10)
    assert found is not None
    assert found.status == "failed"  # the forged "confirmed" was passed over


# The attacks of issue 19, each run as the attacker would: with a generated user's own rights -------


class DeskB(NamedTuple):
    agent: Service
    assistant: FakeAssistant
    settings: Settings


@pytest.fixture
def desk_b(rights: Rights, admin: Broker, services: list[Service], tmp_path: Path) -> DeskB:
    """Desk B's agent, on desk B's own user, with a fake Assistant that records every makecall."""
    assistant = FakeAssistant(tmp_path)
    env = rights.env_of(
        f"desk-{rights.other}",
        TCX_BRIDGE_DESK=rights.other,
        TCX_BRIDGE_ASSISTANT=str(assistant.path),
        TCX_BRIDGE_DATA_DIR=str(tmp_path / "desk-b"),
    )
    settings = load_settings(environ=env).settings
    agent = start_service(services, env, admin, settings.queue(f"desk.{rights.other}"), "agent")
    return DeskB(agent, assistant, settings)


def dial_body(request_id: str, number: str = "0901 123 456") -> bytes:
    return json.dumps({"request_id": request_id, "number": number}).encode()


def test_a_header_cannot_turn_a_pop_into_a_dial(rights: Rights, admin: Broker, desk_b: DeskB) -> None:
    """Escalation 1: tcx-crm may send pops only; a header naming desk.B.dial once made B dial."""
    crm = rights.settings_of("tcx-crm")
    results = Tap(admin, crm, crm.exchange, "dial.#")
    forged = OutgoingMessage(
        f"desk.{rights.other}.popup", dial_body("attack-1"), "attack-1", "dial", 0,
        headers={"x-tcx-routing-key": f"desk.{rights.other}.dial"},
    )  # fmt: skip
    with Broker(crm.amqp_url) as attacker:
        attacker.publish(crm.commands_exchange, forged)
    wait_until(lambda: "id=attack-1" in desk_b.agent.output(), timeout=15)
    assert f"id=attack-1 key=desk.{rights.other}.popup" in desk_b.agent.output()  # what the broker says
    assert desk_b.assistant.calls() == []
    assert results.get(timeout=2) is None  # no dial result, let alone "confirmed"


def test_no_desk_can_make_the_broker_relay_into_another_desk(
    rights: Rights, admin: Broker, desk_b: DeskB
) -> None:
    """Escalation 2: a desk re-declared its dead-letter queue to dead-letter into B's queue."""
    from bridge.topology import again_exchange, retry_exchange

    a = rights.settings_of(f"desk-{rights.desk}")
    own_dead = a.dead_queue(f"desk.{rights.desk}")
    relay = {
        "x-dead-letter-exchange": a.dead_exchange,
        "x-dead-letter-routing-key": f"desk.{rights.other}.again",
        "x-message-ttl": 0,
    }
    b_queue = f"desk.{rights.other}"
    with Broker(a.amqp_url) as attacker:
        with pytest.raises(BrokerRefusedError, match="ACCESS_REFUSED"):
            attacker.delete_queue(own_dead)
        for name, arguments in (
            (own_dead, relay),
            (f"{a.namespace}.relay", relay),
            (f"{a.namespace}.relay", {**relay, "x-dead-letter-exchange": again_exchange(a, b_queue)}),
            (f"{a.namespace}.relay", {**relay, "x-dead-letter-exchange": a.exchange}),
        ):
            with pytest.raises(BrokerRefusedError, match="ACCESS_REFUSED"):
                attacker.declare_queue(name, arguments=arguments)
        for exchange, key in (
            (again_exchange(a, b_queue), f"desk.{rights.other}.dial"),
            (retry_exchange(a, b_queue), f"desk.{rights.other}.dial"),
            (again_exchange(a, f"desk.{rights.desk}"), f"desk.{rights.desk}.dial"),  # not even its own
            (a.dead_exchange, f"desk.{rights.other}.again"),
            (a.dead_exchange, f"desk.{rights.desk}.again"),
            (a.dead_exchange, f"desk.{rights.desk}.retry"),
        ):
            message = OutgoingMessage(key, dial_body("attack-2"), "attack-2", "dial", 0)
            with pytest.raises(BrokerRefusedError, match="ACCESS_REFUSED"):
                attacker.publish(exchange, message)
    assert desk_b.agent.process.poll() is None
    assert "attack-2" not in desk_b.agent.output()
    assert desk_b.assistant.calls() == []


def test_an_event_without_user_id_is_dead_lettered_as_spoofed(
    rights: Rights, admin: Broker, services: list[Service], tmp_path: Path
) -> None:
    """Escalation 3: desk A, on its own key, said "desk": "B" and left user_id out: B popped."""
    desk_user = f"desk-{rights.desk}"
    a = rights.settings_of(desk_user)
    server = {"TCX_BRIDGE_DATA_DIR": str(tmp_path / "server")}
    pops = Tap(admin, a, a.commands_exchange, "desk.*.popup")
    consumers = {
        name: start_service(
            services, rights.env_of(f"tcx-{name}", **server), admin, a.queue(name), "consume", name
        )
        for name in ("crm", "analytics")
    }
    with Broker(a.amqp_url, sign=False) as attacker:  # the broker takes it: no user_id is no lie
        attacker.publish(a.exchange, event_message(rights.desk, rights.other, "no-user"))
    for name, service in consumers.items():
        dead = admin.get(a.dead_queue(name), timeout=15)
        assert dead is not None, name + service.output()
        assert dead.headers["x-tcx-reason"].startswith("spoofed: the message has no user_id"), name
        assert dead.user_id is not None  # the dead letter itself is signed by the consumer
    assert pops.get(timeout=2) is None
    calls = run_cli({**rights.env, **server}, "report", "--calls", "--format", "json")
    assert json.loads(calls.stdout or "[]") == []


def forbidden_actions(rights: Rights) -> dict[str, Callable[[Broker, Settings], None]]:
    """Every action no generated user may take (each user's own allowed ones are left out below)."""
    from bridge.topology import again_exchange, dial_results_queue, retry_exchange

    a, b = rights.desk, rights.other
    s = rights.settings_of("tcx-crm")

    def publish(exchange: str, key: str) -> Callable[[Broker, Settings], None]:
        message = OutgoingMessage(key, dial_body("table"), "table", "dial", 0)
        return lambda broker, _: broker.publish(exchange, message)

    def get(queue: str) -> Callable[[Broker, Settings], None]:
        return lambda broker, _: (broker.get(queue, timeout=1), None)[1]

    return {
        "declare an exchange": lambda broker, _: broker.declare_exchange(f"{s.namespace}.mine", "fanout"),
        "declare a queue": lambda broker, _: (broker.declare_queue(f"{s.namespace}.mine"), None)[1],
        "declare a private queue": lambda broker, _: (broker.declare_private_queue(), None)[1],
        "delete the events exchange": lambda broker, _: broker.delete_exchange(s.exchange),
        "delete crm's queue": lambda broker, _: broker.delete_queue(s.queue("crm")),
        "bind crm's queue to every event": lambda broker, _: broker.bind_queue(
            s.queue("crm"), s.exchange, "#"
        ),
        "publish to amq.default": publish("", s.queue(f"desk.{b}")),
        "publish to a retry exchange": publish(retry_exchange(s, f"desk.{b}"), "x"),
        "publish to an again exchange": publish(again_exchange(s, f"desk.{b}"), f"desk.{b}.dial"),
        "publish an again key to the dead exchange": publish(s.dead_exchange, f"desk.{b}.again"),
        "publish another's dead letter": publish(s.dead_exchange, f"desk.{b}"),
        "publish desk B's call event": publish(s.exchange, f"call.started.inbound.{b}"),
        "publish a callback event": publish(s.exchange, "callback.closed"),
        "publish another key as callbacks": publish(s.exchange, "callback.reached"),
        "publish a dial request": publish(s.commands_exchange, f"desk.{b}.dial"),
        "publish a pop": publish(s.commands_exchange, f"desk.{b}.popup"),
        "read crm's queue": get(s.queue("crm")),
        "read desk B's queue": get(s.queue(f"desk.{b}")),
        "read the dial results": get(dial_results_queue(s)),
        "read a dead-letter queue": get(s.dead_queue(f"desk.{a}")),
        "publish privacy.forget": publish(s.commands_exchange, "privacy.forget"),
        "publish privacy.forget as an event": publish(s.exchange, "privacy.forget"),
        "read a webhook target's queue": get(s.queue("webhooks.hook")),
        "read a webhook target's dead letters": get(s.dead_queue("webhooks.hook")),
        "publish to a webhook target's retry exchange": publish(retry_exchange(s, "webhooks.hook"), "x"),
        "publish to a webhook target's again exchange": publish(again_exchange(s, "webhooks.hook"), "x"),
        "publish a webhook target's dead letter": publish(s.dead_exchange, "webhooks.hook"),
    }


ALLOWED = {  # user -> the actions of forbidden_actions it may take
    "tcx-crm": {"publish a pop", "read crm's queue"},
    "tcx-dialer": {"publish a dial request", "read the dial results"},
    "tcx-privacy": {
        "publish privacy.forget",
        "read a dead-letter queue",
        "read a webhook target's dead letters",
    },
    "desk": set(),
    "tcx-analytics": set(),
    "tcx-wallboard": set(),
    "tcx-callbacks": {"publish a callback event"},
    "tcx-webhooks": {
        "read a webhook target's queue",
        "read a webhook target's dead letters",  # webhooks replay
        "publish to a webhook target's retry exchange",
        "publish a webhook target's dead letter",
    },
}


def test_every_generated_user_is_refused_every_forbidden_action(rights: Rights) -> None:
    """A table of every generated user (but the admin) by every forbidden action: the broker refuses each."""
    actions = forbidden_actions(rights)
    allowed_anyway = []
    users = ("desk", "tcx-crm", "tcx-analytics", "tcx-wallboard", "tcx-webhooks", "tcx-dialer", "tcx-callbacks",
             "tcx-privacy")  # fmt: skip
    for user in users:
        login = f"desk-{rights.desk}" if user == "desk" else user
        settings = rights.settings_of(login)
        with Broker(settings.amqp_url) as broker:
            for name, action in actions.items():
                if name in ALLOWED[user]:
                    continue
                try:
                    action(broker, settings)
                except BrokerRefusedError as error:
                    if "ACCESS_REFUSED" not in str(error):
                        allowed_anyway.append((login, name, str(error)))
                else:
                    allowed_anyway.append((login, name, "done"))
    assert allowed_anyway == []


def test_only_the_privacy_user_makes_a_desk_forget_a_number(rights: Rights, desk_b: DeskB) -> None:
    """An outsider desk cannot ask desk B to forget (the broker refuses every way); tcx-privacy can."""
    from consumers.privacy import command
    from consumers.privacy.forms import forms_of

    number = "+41 79 555 12 34"
    dialer = rights.settings_of("tcx-dialer")
    with Broker(dialer.amqp_url) as broker:
        request = OutgoingMessage(
            f"desk.{rights.other}.dial", dial_body("keep-1", number), "keep-1", "dial", 0
        )
        broker.publish(dialer.commands_exchange, request)
    wait_until(lambda: desk_b.assistant.calls(), timeout=15)
    records = Path(desk_b.settings.data_dir) / "agent.sqlite3"

    def held() -> bool:
        return any(b"795551234" in path.read_bytes() for path in records.parent.glob("agent.sqlite3*"))

    assert held()
    outsider = rights.settings_of(f"desk-{rights.desk}")
    body = json.dumps({"request_id": "attack-f", "number": number, "requested_at": "2026-01-01T00:00:00Z"})
    forged = OutgoingMessage("privacy.forget", body.encode(), "attack-f", "privacy.forget", 0)
    with Broker(outsider.amqp_url) as attacker:
        for exchange in (outsider.commands_exchange, outsider.exchange, outsider.dead_exchange):
            with pytest.raises(BrokerRefusedError, match="ACCESS_REFUSED"):
                attacker.publish(exchange, forged)
    assert held()
    privacy = rights.settings_of("tcx-privacy")
    request_id = command.publish(privacy, forms_of(number, "CH"))
    wait_until(lambda: f"privacy.forget {request_id} from tcx-privacy" in desk_b.agent.output(), timeout=15)
    assert not held()


def test_the_webhooks_user_delivers_retries_dead_letters_and_replays_its_targets(
    rights: Rights, admin: Broker, services: list[Service]
) -> None:
    """consume webhooks and webhooks replay as tcx-webhooks; events from a desk's user, vouched for."""
    from tests.webhook_receiver import Answer, Receiver, Request

    target = {"name": "hook", "url": "http://127.0.0.1:18108/h", "allow_private": True, "retry_base": 0.05}
    targets = {"TCX_BRIDGE_WEBHOOKS": json.dumps([target])}
    declared = run_cli({**rights.env, **targets}, "topology", "declare")
    assert declared.returncode == 0, declared.stderr
    first: list[int] = []

    def behave(request: Request) -> Answer:
        if b'"call_id":"gone"' in request.body:
            return 404, {}
        first.append(1)
        return (500, {}) if len(first) == 1 else (200, {})

    settings = rights.settings_of("tcx-webhooks", **targets)
    with Receiver(18108) as receiver:
        receiver.behaviours["/h"] = behave
        start_service(services, rights.env_of("tcx-webhooks", **targets), admin, settings.queue("webhooks.hook"),
                      "consume", "webhooks")  # fmt: skip
        with Broker(rights.settings_of(f"desk-{rights.desk}").amqp_url) as desk:
            desk.publish(settings.exchange, event_message(rights.desk, rights.desk, "kept"))
            desk.publish(settings.exchange, event_message(rights.desk, rights.desk, "gone"))
            desk.publish(settings.exchange, event_message(rights.desk, rights.other, "spoof"))  # B's, by A
        wait_until(lambda: len(first) == 2 and receiver.count("/h") == 3)  # kept: 500 then 200; gone: 404
        dead = settings.dead_queue("webhooks.hook")
        wait_until(lambda: (admin.queue_info(dead) or (0,))[0] == 2)
        spoofed = [admin.get(dead, timeout=5) for _ in range(2)]
        reasons = sorted(str(letter.headers["x-tcx-reason"]) for letter in spoofed if letter is not None)
        assert reasons[0] == "HTTP 404 Not Found (attempt 1)"
        assert reasons[1].startswith(
            f"spoofed: the event is for desk {rights.other!r} but user 'desk-{rights.desk}'"
        )
        assert not [r for r in receiver.received["/h"] if b'"call_id":"spoof"' in r.body]  # never sent
        gone = next(letter for letter in spoofed if letter is not None and b'"gone"' in letter.body)
        admin.publish(settings.dead_exchange, OutgoingMessage(  # back where it was, for the replay below
            routing_key=gone.routing_key, body=gone.body, message_id=gone.message_id or "",
            type=gone.type or "", timestamp=gone.timestamp or 0, headers=gone.headers,
        ))  # fmt: skip
        wait_until(lambda: (admin.queue_info(dead) or (0,))[0] == 1)
        replayed = run_cli(rights.env_of("tcx-webhooks", **targets), "webhooks", "replay", "hook")
        assert replayed.returncode == 0, replayed.stderr
        assert replayed.stdout == "replayed 1 dead letter(s) of hook\n"
        wait_until(lambda: receiver.count("/h") == 4)  # gone again: it came back vouched for, not as spoofed
        gone = [r for r in receiver.received["/h"] if b'"call_id":"gone"' in r.body]
        assert len(gone) == 2
        assert gone[0].body == gone[1].body
        assert gone[0].headers["webhook-id"] == gone[1].headers["webhook-id"]
        wait_until(lambda: (admin.queue_info(dead) or (0,))[0] == 1)
        letter = admin.get(dead, timeout=5)
        assert letter is not None
        assert letter.headers["x-tcx-reason"] == "HTTP 404 Not Found (attempt 1)"
        assert letter.headers["x-tcx-user-id"] == f"desk-{rights.desk}"
