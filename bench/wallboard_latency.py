"""Wallboard latency: a call event published -> visible in the browser's DOM, with 50 desks on the board.

Starts `tcx-bridge wallboard` in its own namespace on the local broker, its store
seeded with 5,000 calls of the day so far on 50 desks (answered, missed, dialed),
opens the page in Chromium (Playwright, Debian's chromium),
then publishes 200 events (a call ringing, then ended, desk after desk) and
times each from the publish's confirm until the desk's state shows on the page.
Also the server's CPU time per event (its process's user + system time). The
baseline measured in the same run is the broker's own round trip: the same
publish and a plain consumer receiving it (on a routing key only its queue binds,
so the board keeps its 50 desks). Targets: p95 <= 250 ms, server CPU
<= 2 ms per call event.

    python bench/wallboard_latency.py [--events 200] [--desks 50] [--calls 5000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge import events
from bridge.config import Settings, load_settings
from bridge.simulate import find_script
from bridge.topology import declare_events, publish_event
from bridge.transport import Broker, OutgoingMessage
from consumers.analytics.calls import apply_event
from consumers.store.core import open_store


def message(desk: str, kind: str, call_id: str) -> OutgoingMessage:
    event = events.CallEvent(
        event_id=events.new_event_id(), kind=kind, direction="inbound", call_id=call_id,  # type: ignore[arg-type]
        caller_id="0791234567" if kind == "started" else None, desk=desk, extension=None,
        occurred_at=events.format_time(datetime.now(UTC)), argv=(),
    )  # fmt: skip
    return OutgoingMessage(event.routing_key, events.ENCODER.encode(event), event.event_id, f"call.{kind}", 0)


def seed(settings: Settings, desks: list[str], calls: int) -> None:
    """calls calls of today so far (UTC) in the wallboard's store, spread over desks: all ended."""
    now = datetime.now(UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    span = max(60.0, (now - start).total_seconds() - 600)
    store = open_store(settings, "wallboard")
    with store.transaction():
        for n in range(calls):
            began = start + timedelta(seconds=span * n / calls)
            direction = "outbound" if n % 7 == 0 else "inbound"
            steps = [("started", 0.0)]
            if n % 6 != 0:  # every sixth call unanswered (missed, or not connected)
                steps.append(("connected", 2.0 + n % 25))
            steps.append(("ended", 40.0 + n % 240))
            for kind, seconds in steps:
                apply_event(store, events.CallEvent(
                    event_id=events.new_event_id(), kind=kind, direction=direction,  # type: ignore[arg-type]
                    call_id=f"seed-{n}", caller_id=f"07912{n:05d}" if kind == "started" else None,
                    desk=desks[n % len(desks)], extension=None,
                    occurred_at=events.format_time(began + timedelta(seconds=seconds)), argv=(),
                ))  # fmt: skip
    store.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--desks", type=int, default=50)
    parser.add_argument("--calls", type=int, default=5000, help="calls already in the day")
    parser.add_argument(
        "--amqp-url", default=os.environ.get("TCX_BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    )
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="tcx-wallboard-bench-"))
    (work / "config.toml").write_text("")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TCX_BRIDGE_")}
    env |= {"TCX_BRIDGE_AMQP_URL": args.amqp_url, "TCX_BRIDGE_NAMESPACE": f"wb{uuid.uuid4().hex[:6]}",
            "TCX_BRIDGE_DATA_DIR": str(work), "TCX_BRIDGE_CONFIG": str(work / "config.toml"),
            "TCX_BRIDGE_TIMEZONE": "UTC"}  # fmt: skip
    settings = load_settings(environ=env).settings
    desks = [f"bench-{n:02d}" for n in range(args.desks)]
    seed(settings, desks, args.calls)
    server = subprocess.Popen([find_script("tcx-bridge") or "tcx-bridge", "wallboard", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    desks = [f"bench-{n:02d}" for n in range(args.desks)]
    try:
        with Broker(settings.amqp_url) as broker:
            declare_events(broker, settings)
            deadline = time.monotonic() + 30
            while (info := broker.queue_info(settings.queue("wallboard"))) is None or info[1] == 0:
                assert time.monotonic() < deadline, "the wallboard did not start"
                time.sleep(0.1)
            probe_queue = f"{settings.namespace}.probe"
            broker.declare_queue(probe_queue)
            broker.bind_queue(probe_queue, settings.exchange, "bench.probe")
            for desk in desks:  # every desk on the board, idle
                publish_event(broker, settings, message(desk, "started", f"{desk}-warm"))
                publish_event(broker, settings, message(desk, "ended", f"{desk}-warm"))
            while broker.get(probe_queue, timeout=0.5) is not None:
                pass
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=["--no-sandbox"]
                )
                page = browser.new_page(viewport={"width": 1920, "height": 1080})
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_selector("#link.online")
                page.wait_for_function(f"document.querySelectorAll('[data-desk]').length === {args.desks}")
                board, broker_only = [], []
                cpu_before = cpu_seconds(server.pid)
                for n in range(args.events):
                    desk = desks[n // 2 % len(desks)]  # rings, then its call ends: a change each time
                    kind, state = ("started", "ringing") if n % 2 == 0 else ("ended", "idle")
                    call_id = f"{desk}-{n // 2}"
                    sent = time.perf_counter()
                    publish_event(broker, settings, message(desk, kind, call_id))
                    page.wait_for_selector(f'[data-desk="{desk}"][data-state="{state}"]', timeout=5000)
                    board.append((time.perf_counter() - sent) * 1000)
                    sent = time.perf_counter()
                    probe = message(desk, "started", f"p{n}")._replace(routing_key="bench.probe")
                    publish_event(broker, settings, probe)
                    broker.get(probe_queue, timeout=5)
                    broker_only.append((time.perf_counter() - sent) * 1000)
                cpu = cpu_seconds(server.pid) - cpu_before
                browser.close()
            broker.delete_queue(probe_queue)
    finally:
        server.terminate()
        server.wait(20)
        shutil.rmtree(work, ignore_errors=True)
    where = args.amqp_url.rsplit("@", 1)[-1]
    print(f"{args.events} events, {args.desks} desks, {args.calls} calls in the day, broker {where}")
    p50, p95 = statistics.median(board), percentile(board, 0.95)
    print(f"published -> in the page's DOM   p50 {p50:6.1f} ms   p95 {p95:6.1f} ms")
    print(f"baseline: publish -> a consumer   p50 {statistics.median(broker_only):6.1f} ms   "
          f"p95 {percentile(broker_only, 0.95):6.1f} ms")  # fmt: skip
    per_event = cpu / args.events * 1000
    print(f"server CPU per event: {per_event:.2f} ms (target <= 2 ms): {'OK' if per_event <= 2 else 'OVER'}")
    print(f"p95 {p95:.1f} ms (target <= 250 ms): {'OK' if p95 <= 250 else 'OVER'}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load} at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
