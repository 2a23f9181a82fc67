"""Shared fixtures: a real broker, and unique names so runs never see each other's messages.

Broker selection: TCX_BRIDGE_TEST_AMQP_URL, else the local broker on
127.0.0.1:5672 if it answers, else testcontainers' RabbitMqContainer where Docker
runs, else the integration tests fail saying how to provide a broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pika
import pytest

from bridge.config import Settings, load_settings
from bridge.topology import declare_events
from bridge.transport import Broker, Delivery
from tests.cluster import LocalCluster, rabbitmq_available

LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
NO_BROKER = (
    "no RabbitMQ broker for the integration tests: set TCX_BRIDGE_TEST_AMQP_URL=amqp://user:pass@host:5672/%2F, "
    "or start one on 127.0.0.1:5672 (rabbitmq-server -detached), or install Docker for testcontainers"
)


def _local_broker_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    """The AMQP URL of the broker every integration test uses."""
    explicit = os.environ.get("TCX_BRIDGE_TEST_AMQP_URL")
    if explicit:
        yield explicit
        return
    if _local_broker_answers():
        yield LOCAL_URL
        return
    try:
        try:
            from testcontainers.rabbitmq import RabbitMqContainer
        except ImportError:  # recent releases moved it
            from testcontainers.community.rabbitmq import RabbitMqContainer  # type: ignore[no-redef]
        container = RabbitMqContainer("rabbitmq:3.13-management")
        container.start()
    except Exception as error:  # noqa: BLE001  # any failure here means: no Docker
        pytest.fail(f"{NO_BROKER} ({type(error).__name__}: {error})", pytrace=False)
    try:
        host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
        yield f"amqp://guest:guest@{host}:{port}/%2F"
    finally:
        container.stop()


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster | list[str]]:
    """A 3-node RabbitMQ cluster of the tests' own: TCX_BRIDGE_TEST_CLUSTER_URLS (comma-separated
    URLs of an existing cluster; tests that kill nodes then skip), else three local nodes on ports
    of their own (never the shared 5672), started once per session and removed at the end.
    """
    explicit = os.environ.get("TCX_BRIDGE_TEST_CLUSTER_URLS")
    if explicit:
        yield [url.strip() for url in explicit.split(",") if url.strip()]
        return
    if not rabbitmq_available():
        pytest.skip("no rabbitmq-server here to start a test cluster; set TCX_BRIDGE_TEST_CLUSTER_URLS")
    local = LocalCluster(3)
    try:
        local.start()
        yield local
    finally:
        local.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database created for this test run and dropped after it (see tests/postgres.py)."""
    from tests.postgres import answers, server_url, test_database

    url = server_url()
    why = answers(url)
    if why:
        pytest.skip(why)
    with test_database(url) as database:
        yield database


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """A store_url of this test alone: a schema of its own in the run's database."""
    from tests.postgres import with_schema

    return with_schema(pg_database, f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
def namespace() -> str:
    """A namespace (prefix of every exchange and queue) of this test alone."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def desk() -> str:
    return f"desk-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def env(broker_url: str, namespace: str, desk: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a desk configured for this test's broker and names."""
    config = tmp_path / "config.toml"
    config.write_text("")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TCX_BRIDGE_")}
    environ.update(
        TCX_BRIDGE_AMQP_URL=broker_url,
        TCX_BRIDGE_NAMESPACE=namespace,
        TCX_BRIDGE_DESK=desk,
        TCX_BRIDGE_EXTENSION="101",
        TCX_BRIDGE_DATA_DIR=str(tmp_path / "data"),
        TCX_BRIDGE_CONFIG=str(config),
    )
    return environ


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(environ=env).settings


@pytest.fixture
def broker(settings: Settings) -> Iterator[Broker]:
    """A connection to the test broker; deletes this test's namespace afterwards."""
    with Broker(settings.amqp_url) as connection:
        yield connection
    _cleanup(settings)


def _cleanup(settings: Settings) -> None:
    """Delete every queue and exchange this test's namespace may have (missing ones are fine)."""
    from bridge.inventory import expected

    entities = expected(settings, [settings.desk, *EXTRA_DESKS])
    queues = [e.name for e in entities if e.kind == "queue"] + TAPS.pop(settings.namespace, [])
    exchanges = [e.name for e in entities if e.kind == "exchange"]
    with Broker(settings.amqp_url) as connection:
        for queue in queues:
            connection.delete_queue(queue)
        for exchange in exchanges:
            connection.delete_exchange(exchange)


EXTRA_DESKS = ["d1", "nobody-here"]
TAPS: dict[str, list[str]] = {}


class Tap:
    """A queue bound to an exchange to watch what is published there."""

    def __init__(self, broker: Broker, settings: Settings, exchange: str, pattern: str) -> None:
        self.broker = broker
        self.name = f"{settings.namespace}.tap.{uuid.uuid4().hex[:6]}"
        TAPS.setdefault(settings.namespace, []).append(self.name)
        broker.declare_queue(self.name)
        broker.bind_queue(self.name, exchange, pattern)

    def get(self, timeout: float = 5.0) -> Delivery | None:
        return self.broker.get(self.name, timeout=timeout)

    def drain(self, idle: float = 1.0) -> list[Delivery]:
        """Everything until the queue stays empty for idle seconds."""
        found = []
        while (delivery := self.get(timeout=idle)) is not None:
            found.append(delivery)
        return found


@pytest.fixture
def events_tap(broker: Broker, settings: Settings) -> Tap:
    """A queue bound to every event of this test's events exchange (declared first)."""
    from bridge.topology import declare_events

    declare_events(broker, settings)
    return Tap(broker, settings, settings.exchange, "#")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_port_in(ports: range) -> int:
    """The first port of ports (tried in their order) free on 127.0.0.1: a server of a test's own range."""
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {ports.start}-{ports.stop - ports.step}")


def wallboard_tiles(port: int) -> dict[str, Any]:
    """The tiles of a local wallboard's /api/state."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as answer:
        tiles: dict[str, Any] = json.loads(answer.read())["tiles"]
    return tiles


def script(name: str) -> list[str]:
    """The command of an installed console script, falling back to python -m."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return [found]
    module = {"tcx-bridge-notify": "bridge.notify", "tcx-bridge": "bridge.cli"}[name]
    return [sys.executable, "-m", module]


def run_notify(env: dict[str, str], *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """One launch of the registered executable, as the Assistant does it."""
    return subprocess.run(
        [*script("tcx-bridge-notify"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_cli(env: dict[str, str], *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*script("tcx-bridge"), *argv], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, every: float = 0.05) -> None:
    """Poll a condition (a broker state, a file) until it holds; fail after timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {predicate}")
        time.sleep(every)


FAKE_ASSISTANT = """#!{python}
# A stand-in for tcx.assistant.client.exe: records its argv, then behaves as told.
import json, os, signal, sys
with open({log!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
mode = os.environ.get("FAKE_ASSISTANT_MODE", "ok")
if mode == "fail":
    print("Assistant is not running", file=sys.stderr)
    sys.exit(3)
if mode == "kill-agent":
    os.kill(os.getppid(), signal.SIGKILL)
"""


class FakeAssistant:
    """An executable that records every argv it is run with."""

    def __init__(self, directory: Path) -> None:
        self.log = directory / "assistant.log"
        self.path = directory / "fake-assistant"
        self.path.write_text(FAKE_ASSISTANT.format(python=sys.executable, log=str(self.log)))
        self.path.chmod(0o755)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def fake_assistant(tmp_path: Path) -> FakeAssistant:
    return FakeAssistant(tmp_path)


class Service:
    """A long-running tcx-bridge command (consumer, agent) in its own process."""

    def __init__(self, env: dict[str, str], *argv: str) -> None:
        self.argv = argv
        self.log = Path(env["TCX_BRIDGE_DATA_DIR"]).parent / f"service-{uuid.uuid4().hex[:6]}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([*script("tcx-bridge"), *argv], env=env, stdout=out, stderr=out)

    def wait_consuming(self, broker: Broker, queue: str, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"{self.argv} exited with {self.process.returncode}:\n{self.output()}")
            info = broker.queue_info(queue)
            return info is not None and info[1] > 0

        wait_until(ready, timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


def start_service(
    services: list[Service], env: dict[str, str], broker: Broker, queue: str, *argv: str
) -> Service:
    """Start a long-running command and wait until it consumes queue."""
    service = Service(env, *argv)
    services.append(service)
    service.wait_consuming(broker, queue)
    return service


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Started services, stopped (killed if need be) after the test."""
    started: list[Service] = []
    yield started
    for service in started:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait(10)


@pytest.fixture
def analytics(env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]) -> Service:
    """The analytics consumer, running and consuming its queue."""
    return start_service(services, env, broker, settings.queue("analytics"), "consume", "analytics")


@pytest.fixture
def agent_env(env: dict[str, str], fake_assistant: FakeAssistant) -> dict[str, str]:
    return {**env, "TCX_BRIDGE_ASSISTANT": str(fake_assistant.path), "TCX_BRIDGE_REPLAY_INTERVAL": "0.5"}


@pytest.fixture
def results(broker: Broker, settings: Settings) -> Tap:
    declare_events(broker, settings)
    return Tap(broker, settings, settings.exchange, "dial.#")


@pytest.fixture
def agent(agent_env: dict[str, str], broker: Broker, settings: Settings, services: list[Service]) -> Service:
    service = start_service(services, agent_env, broker, desk_queue(settings), "agent")
    return service


@pytest.fixture
def plain(settings: Settings) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A plain pika channel, as a CRM server in any language would have."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    yield connection.channel()
    connection.close()


def desk_queue(settings: Settings) -> str:
    return settings.queue(f"desk.{settings.desk}")


def publish_raw(channel: object, settings: Settings, body: dict[str, object], routing_key: str) -> None:
    channel.basic_publish(  # type: ignore[attr-defined]
        settings.commands_exchange,
        routing_key,
        json.dumps(body).encode(),
        # user_id, as every publisher must set it: the broker checks it against the login
        pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,
            user_id=urlsplit(settings.amqp_url.split(",")[0]).username or "guest",
        ),
    )


class Proxy:
    """A TCP proxy to the real broker: cut() drops every connection (a broker restart,
    a network cut); with swallow_publishes it forwards until the client publishes and
    then swallows everything (a broker that accepted the connection and went silent).
    """

    def __init__(self, broker_url: str, *, swallow_publishes: bool = False) -> None:
        parts = urlsplit(broker_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5672)
        self.swallow_publishes = swallow_publishes
        self.listener = socket.create_server(("127.0.0.1", 0))
        port = self.listener.getsockname()[1]
        self.url = urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}"))
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()
            upstream = self._client_to_server if self.swallow_publishes else self._pump
            threading.Thread(target=upstream, args=(client, server), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _client_to_server(client: socket.socket, server: socket.socket) -> None:
        buffer = b""
        forwarding = True
        with contextlib.suppress(OSError):
            server.sendall(client.recv(8))  # the protocol header
            while data := client.recv(65536):
                buffer += data
                while forwarding and len(buffer) >= 7:
                    frame_type, _, size = struct.unpack(">BHI", buffer[:7])
                    if len(buffer) < size + 8:
                        break
                    frame, buffer = buffer[: size + 8], buffer[size + 8 :]
                    if frame_type == 1 and frame[7:11] == struct.pack(">HH", 60, 40):  # basic.publish
                        forwarding = False
                        break
                    server.sendall(frame)

    def cut(self) -> None:
        """Drop every open connection; new ones are accepted again."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.sockets.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()
