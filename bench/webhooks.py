"""Webhook delivery: throughput over 5 targets, and what a target that never answers does to the others.

``tcx-bridge consume webhooks`` runs as a process of its own against the broker;
this script hosts the receivers (127.0.0.1:18150 answers 200 at once, :18151 never
answers) and publishes the call events.

1. Throughput: a burst of --events call events, each delivered to 5 healthy targets;
   deliveries per second from the first publish to the last arrival. Target: >= 500/s.
2. Latency: --rate events per second for --seconds, to the 5 healthy targets, once
   without and once with a sixth target that never answers (timeout 5 s, concurrency 4);
   the healthy targets' p95 delivery latency (occurred_at to arrival), each run against
   the other; runs alternate, and the medians of --rounds runs are compared (the p95 of a
   single run moves with whatever else the machine does). Target: with the hanging
   target, within 1.5x of the runs without it.

    python bench/webhooks.py [--events 2000] [--rate 100] [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.config import Settings, load_settings
from bridge.events import CallEvent, parse_time, utc_now
from bridge.inventory import declare_all, expected
from bridge.transport import Broker, OutgoingMessage
from tests.webhook_receiver import Receiver, Request

HEALTHY, HANGING = 18150, 18151
TARGETS = 5


def environment(namespace: str, data_dir: str, hanging: bool) -> dict[str, str]:
    targets = [
        {"name": f"t{number}", "url": f"http://127.0.0.1:{HEALTHY}/t{number}", "allow_private": True,
         "concurrency": 4}
        for number in range(TARGETS)
    ]  # fmt: skip
    if hanging:
        targets.append(
            {"name": "hang", "url": f"http://127.0.0.1:{HANGING}/hang", "allow_private": True, "timeout": 5.0}
        )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TCX_BRIDGE_")}
    environ.update(
        TCX_BRIDGE_AMQP_URL=os.environ.get("TCX_BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        TCX_BRIDGE_NAMESPACE=namespace,
        TCX_BRIDGE_DATA_DIR=data_dir,
        TCX_BRIDGE_CONFIG=str(Path(data_dir) / "none.toml"),
        TCX_BRIDGE_WEBHOOKS=json.dumps(targets),
    )
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    Path(environ["TCX_BRIDGE_CONFIG"]).write_text("")
    return environ


def events(count: int) -> list[OutgoingMessage]:
    """count call starts, each of a call of its own (a call's events go one after the other)."""
    found = []
    for _number in range(count):
        event = CallEvent(
            event_id=str(uuid.uuid4()), kind="started", direction="inbound", call_id=uuid.uuid4().hex[:16],
            caller_id="+4930123456", desk="bench", extension="100", occurred_at=utc_now(), argv=(),
        )  # fmt: skip
        found.append(
            OutgoingMessage(
                routing_key=event.routing_key, body=msgspec.json.encode(event), message_id=event.event_id,
                type="call", timestamp=int(time.time()),
            )
        )  # fmt: skip
    return found


def start(environ: dict[str, str], settings: Settings) -> subprocess.Popen[bytes]:
    with Broker(settings.amqp_url) as broker:
        declare_all(broker, settings, [])
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "consume", "webhooks"], env=environ,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    with Broker(settings.amqp_url) as broker:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            infos = [broker.queue_info(settings.queue(f"webhooks.t{n}")) for n in range(TARGETS)]
            if all(info is not None and info[1] >= 1 for info in infos):
                return process
            time.sleep(0.1)
    process.kill()
    raise SystemExit("consume webhooks did not start consuming within 30 s")


def stop(process: subprocess.Popen[bytes], settings: Settings) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
    with Broker(settings.amqp_url) as broker:
        entities = expected(settings, [])
        for entity in entities:
            if entity.kind == "queue":
                broker.delete_queue(entity.name)
        for entity in entities:
            if entity.kind == "exchange":
                broker.delete_exchange(entity.name)


def healthy_requests(receiver: Receiver) -> list[Request]:
    return [request for n in range(TARGETS) for request in receiver.received.get(f"/t{n}", [])]


def wait_for(receiver: Receiver, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(healthy_requests(receiver)) < count:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"only {len(healthy_requests(receiver))} of {count} deliveries within {timeout}s"
            )
        time.sleep(0.02)


def throughput(count: int, workdir: str) -> float:
    namespace = f"bw{uuid.uuid4().hex[:8]}"
    environ = environment(namespace, f"{workdir}/{namespace}", hanging=False)
    settings = load_settings(environ=environ).settings
    with Receiver(HEALTHY) as receiver:
        process = start(environ, settings)
        try:
            messages = events(count)
            started = time.time()
            with Broker(settings.amqp_url) as broker:
                broker.publish_many(settings.exchange, messages)
            wait_for(receiver, count * TARGETS, timeout=120)
            last = max(request.at for request in healthy_requests(receiver))
        finally:
            stop(process, settings)
    return count * TARGETS / (last - started)


def latency(rate: float, seconds: float, hanging: bool, workdir: str) -> tuple[float, float, int]:
    """(p50, p95) in ms of the healthy targets' deliveries, and how many, at rate events/s."""
    namespace = f"bw{uuid.uuid4().hex[:8]}"
    environ = environment(namespace, f"{workdir}/{namespace}", hanging=hanging)
    settings = load_settings(environ=environ).settings
    with Receiver(HEALTHY) as receiver, Receiver(HANGING) as never:
        never.behaviours["/hang"] = lambda _: None
        process = start(environ, settings)
        try:
            total = int(rate * seconds)
            with Broker(settings.amqp_url) as broker:
                began = time.monotonic()
                for number in range(total):
                    (message,) = events(1)
                    broker.publish(settings.exchange, message)
                    pause = began + (number + 1) / rate - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
            wait_for(receiver, total * TARGETS, timeout=60)
            taken = [
                (request.at - parse_time(json.loads(request.body)["occurred_at"]).timestamp()) * 1000
                for request in healthy_requests(receiver)
            ]
            hung = never.count("/hang")
        finally:
            stop(process, settings)
    cuts = statistics.quantiles(taken, n=100)
    left = f" ({hung} requests left hanging)" if hanging else ""
    print(f"    {'with' if hanging else 'without'} the hanging target: {len(taken)} deliveries, "
          f"p50 {cuts[49]:.1f} ms, p95 {cuts[94]:.1f} ms{left}")  # fmt: skip
    return cuts[49], cuts[94], len(taken)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="events per second in the latency runs")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="latency runs of each kind (the machine is noisy)"
    )
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-webhooks-")
    try:
        print(f"webhooks bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs")
        per_second = throughput(args.events, workdir)
        verdict = "OK" if per_second >= 500 else "BELOW TARGET"
        print(f"  throughput: {args.events} events x {TARGETS} targets = {args.events * TARGETS} deliveries, "
              f"{per_second:.0f}/s (target >= 500/s): {verdict}")  # fmt: skip
        print(f"  latency at {args.rate:.0f} events/s x {TARGETS} targets for {args.seconds:.0f} s, "
              f"{args.rounds} round(s) each, alternating:")  # fmt: skip
        alone, beside = [], []
        for _ in range(args.rounds):
            alone.append(latency(args.rate, args.seconds, hanging=False, workdir=workdir)[1])
            beside.append(latency(args.rate, args.seconds, hanging=True, workdir=workdir)[1])
        ratio = statistics.median(beside) / statistics.median(alone)
        verdict = "OK" if ratio <= 1.5 else "BELOW TARGET"
        print(f"  healthy p95, median of the rounds: {statistics.median(alone):.1f} ms without, "
              f"{statistics.median(beside):.1f} ms with a never-answering target: {ratio:.2f}x "
              f"(target <= 1.5x): {verdict}")  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
