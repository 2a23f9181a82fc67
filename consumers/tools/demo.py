"""``tcx-bridge demo``: the whole system on one machine in under a minute.

1. declares the topology (a namespace of its own, removed at the end);
2. imports sample contacts;
3. starts the CRM and analytics consumers and a desk agent with the fake Assistant;
4. simulates a few minutes of calls, compressed into seconds, across three desks;
5. queues a dial request for the first desk;
6. shows screen pops and dial results (dialed, then confirmed) as they happen;
7. prints the analytics report;
8. stops everything cleanly.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from bridge import events
from bridge.config import Settings, redact_url
from bridge.dial import request_dial
from bridge.errors import BrokerUnreachableError, TcxBridgeError
from bridge.inventory import declare_all, expected
from bridge.simulate import SAMPLE_CONTACTS, find_script, notify_command, plan_traffic, play
from bridge.text import csv_cell
from bridge.transport import Broker
from consumers.analytics.report import COLUMNS, daily_report, render_table
from consumers.crm.contacts import open_contacts
from consumers.store.core import open_store, sqlite_path

DESKS = ("demo-1", "demo-2", "demo-3")
Say = Callable[[str], None]


def broker_url(settings: Settings, say: Say) -> Iterator[str]:
    """The configured broker if it answers; else a testcontainers RabbitMQ where Docker runs."""
    try:
        with Broker(settings.amqp_url, timeout=3):
            pass
    except BrokerUnreachableError as error:
        if (
            shutil.which("docker") is None
            or subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0
        ):
            raise BrokerUnreachableError(
                f"no RabbitMQ at {redact_url(settings.amqp_url)} ({error}) and no Docker to start one: "
                "start RabbitMQ (docker compose up -d rabbitmq, or rabbitmq-server -detached) "
                "or set TCX_BRIDGE_AMQP_URL"
            ) from None
        say(f"no RabbitMQ at {redact_url(settings.amqp_url)}: starting one with testcontainers")
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as container:
            host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
            yield f"amqp://guest:guest@{host}:{port}/%2F"
        return
    yield settings.amqp_url


def tcx_bridge() -> list[str]:
    found = find_script("tcx-bridge")
    return [found] if found else [sys.executable, "-m", "bridge.cli"]


def fake_assistant() -> str:
    found = find_script("tcx-bridge-fake-assistant")
    if found is None:
        raise TcxBridgeError(
            "tcx-bridge-fake-assistant is not installed next to tcx-bridge; reinstall the package"
        )
    return found


class Watcher(threading.Thread):
    """Prints screen pops and dial results as they arrive."""

    def __init__(self, settings: Settings, say: Say) -> None:
        super().__init__(daemon=True)
        self.settings, self.say = settings, say
        self.pops = 0
        self.results: list[events.DialResult] = []
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with Broker(self.settings.amqp_url) as broker:
            queue = broker.declare_private_queue()
            broker.bind_queue(queue, self.settings.commands_exchange, "desk.*.popup")
            broker.bind_queue(queue, self.settings.exchange, "dial.#")
            self.ready.set()
            while not self.stop.is_set():
                delivery = broker.get(queue, timeout=0.2)
                if delivery is None:
                    continue
                if delivery.routing_key.endswith(".popup"):
                    pop = events.SCREEN_POP_DECODER.decode(delivery.body)
                    who = f"{pop.contact.name} ({pop.contact.company})" if pop.contact else "unknown caller"
                    self.say(f"  pop    {pop.desk:<7} {pop.caller_id or 'anonymous':<14} {who}")
                    self.pops += 1
                else:
                    result = events.EVENT_DECODER.decode(delivery.body)
                    if not isinstance(result, events.DialResult):
                        continue
                    self.say(
                        f"  dial   {result.desk:<7} {result.number:<14} {result.status}"
                        + (f" (call id {result.call_id})" if result.call_id else "")
                        + (f": {result.reason}" if result.reason else "")
                    )
                    self.results.append(result)


@contextmanager
def services(settings: Settings, env: dict[str, str], say: Say) -> Iterator[None]:
    """The CRM and analytics consumers and the desk agent of the first desk, stopped with SIGTERM."""
    started = []
    log_dir = Path(settings.data_dir)
    commands = [
        ("crm", ["consume", "crm"], {}),
        ("analytics", ["consume", "analytics"], {}),
        (f"agent {DESKS[0]}", ["agent"], {"TCX_BRIDGE_DESK": DESKS[0], "TCX_BRIDGE_EXTENSION": "201"}),
    ]
    board_port = wallboard_port()
    if board_port is not None:
        commands.append(("wallboard", ["wallboard", "--port", str(board_port)], {}))
    try:
        for name, argv, extra in commands:
            with (log_dir / f"{name.split()[0]}.log").open("ab") as log:
                process = subprocess.Popen(
                    [*tcx_bridge(), *argv], env={**env, **extra}, stdout=log, stderr=log
                )
            started.append((name, process))
        with Broker(settings.amqp_url) as broker:
            queues = [settings.queue("crm"), settings.queue("analytics"), settings.queue(f"desk.{DESKS[0]}")]
            queues += [settings.queue("wallboard")] if board_port is not None else []
            deadline = time.monotonic() + 30
            for queue in queues:
                while (info := broker.queue_info(queue)) is None or info[1] == 0:
                    if time.monotonic() > deadline:
                        raise TcxBridgeError(f"the consumer of {queue!r} did not start; see {log_dir}")
                    time.sleep(0.05)
        say("3. started: " + ", ".join(name for name, _ in started))
        if board_port is not None:
            say(f"   wallboard: http://127.0.0.1:{board_port}/ (open it to watch the calls come in)")
        yield
    finally:
        for _, process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = []
        for name, process in started:
            try:
                codes.append(f"{name} exit {process.wait(20)}")
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(f"{name} killed")
        say("8. stopped: " + ", ".join(codes))


def wallboard_port() -> int | None:
    """A free port for the wallboard, or None when its extra (Starlette, uvicorn) is not installed."""
    import importlib.util
    import socket

    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_processed(settings: Settings, expected_events: int, timeout: float) -> int:
    """Wait until analytics has processed expected_events (or timeout); return how many it did."""
    import sqlite3

    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        try:
            connection = sqlite3.connect(sqlite_path(settings, "analytics"))
            count = int(connection.execute("SELECT count(*) FROM processed").fetchone()[0])
            connection.close()
        except sqlite3.Error:
            count = 0
        if count >= expected_events:
            break
        time.sleep(0.1)
    return count


def run_demo(base: Settings, say: Say, *, calls: int = 30, seed: int = 7, speed: float = 60.0) -> None:
    """The whole demo; raises TcxBridgeError when something is wrong."""
    namespace = f"tcxdemo-{uuid.uuid4().hex[:6]}"
    for url in broker_url(base, say):
        work = Path(tempfile.mkdtemp(prefix="tcx-demo-"))
        settings = msgspec.structs.replace(
            base,
            amqp_url=url,
            namespace=namespace,
            exchange=f"{namespace}.events",
            data_dir=str(work),
            desk=DESKS[0],
            store_url=None,  # the demo's stores are SQLite files in its own directory
        )
        try:
            _run(settings, work, say, calls=calls, seed=seed, speed=speed)
        except TcxBridgeError:
            say(f"the demo failed; its logs and stores are kept in {work}")
            raise
        shutil.rmtree(work, ignore_errors=True)


def import_contacts(settings: Settings, work: Path) -> int:
    """The sample contacts, written as a CSV file and imported as an operator would: how many."""
    contacts_csv = work / "contacts.csv"
    with contacts_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "phone", "company", "url"])
        for n, (name, phone, company) in enumerate(SAMPLE_CONTACTS):
            row = [name, phone, company, f"https://crm.example.com/contacts/{n + 1}"]
            writer.writerow([csv_cell(cell) for cell in row])
    contacts = open_contacts(settings)
    try:
        return contacts.import_file(contacts_csv, settings.region).imported
    finally:
        contacts.close()


def demo_env(settings: Settings, work: Path) -> dict[str, str]:
    """The environment of the demo's processes: its broker, namespace and data dir, the fake Assistant."""
    assistant = fake_assistant()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TCX_BRIDGE_")}
    env.update(
        TCX_BRIDGE_AMQP_URL=settings.amqp_url,
        TCX_BRIDGE_NAMESPACE=settings.namespace,
        TCX_BRIDGE_DATA_DIR=str(work),
        TCX_BRIDGE_CONFIG=str(work / "none.toml"),
        TCX_BRIDGE_ASSISTANT=assistant,
        TCX_BRIDGE_REGION=settings.region,
        TCX_BRIDGE_POPUP_COMMAND=f"{assistant} popup {{name}} {{e164}}",
    )
    (work / "none.toml").write_text("")
    return env


def remove_topology(settings: Settings) -> None:
    """Delete the demo's queues and exchanges (its namespace is its own)."""
    with Broker(settings.amqp_url) as broker:
        for entity in reversed(expected(settings, list(DESKS))):
            if entity.kind == "queue":
                broker.delete_queue(entity.name)
            else:
                broker.delete_exchange(entity.name)


def _run(settings: Settings, work: Path, say: Say, *, calls: int, seed: int, speed: float) -> None:
    started = time.monotonic()
    say(f"broker {redact_url(settings.amqp_url)}, namespace {settings.namespace}, data in {work}")
    with Broker(settings.amqp_url) as broker:
        declare_all(broker, settings, list(DESKS))
    say(f"1. declared the topology: {len(expected(settings, list(DESKS)))} exchanges and queues")

    say(f"2. imported {import_contacts(settings, work)} sample contacts")
    env = demo_env(settings, work)
    watcher = Watcher(settings, say)
    with services(settings, env, say):
        watcher.start()
        watcher.ready.wait(10)
        plan = plan_traffic(calls, DESKS, seed=seed, speed=speed)
        kinds = ", ".join(f"{count} {kind}" for kind, count in plan.kinds.items())
        say(f"4. simulating {calls} calls ({kinds}): {plan.launches} launches of tcx-bridge-notify")
        outcome = play(plan, notify_command(), env, concurrency=8)
        say(f"   {outcome.launched} launches in {outcome.seconds:.1f}s, {outcome.failed} failed")
        number = SAMPLE_CONTACTS[0][1]
        request = request_dial(settings, number, desk=DESKS[0], ttl=60, requested_by="demo")
        say(f"5. queued dial request {request.request_id} for {DESKS[0]}: {number}")
        deadline = time.monotonic() + 20  # dialed, then confirmed by the fake Assistant's own S event
        while time.monotonic() < deadline and not any(r.status != "dialed" for r in watcher.results):
            time.sleep(0.1)
        total = plan.launches + 3  # the fake Assistant reports the dialed call too (S, C, E)
        done = wait_processed(settings, total, timeout=30)
        say(
            f"6. {watcher.pops} screen pops, {len(watcher.results)} dial result(s); "
            f"analytics processed {done}/{total} events"
        )
        watcher.stop.set()
        watcher.join(5)
        store = open_store(settings, "analytics", existing=True)
        summary = daily_report(store)
        if store is not None:
            store.close()
        say(f"7. report (times compressed {speed:g}x)")
        say(render_table(summary["by_desk"], ["desk", *COLUMNS]))
    remove_topology(settings)
    if [result.status for result in watcher.results] != ["dialed", "confirmed"]:
        raise TcxBridgeError("the dial request was not dialed and confirmed; see the logs in the data dir")
    if done < total:
        raise TcxBridgeError(f"analytics processed only {done} of {total} events")
    say(f"done in {time.monotonic() - started:.1f}s")
