"""Wallboard latency: a call event published -> visible in the browser's DOM, with 50 desks on the board.

Starts `tcx-bridge wallboard` in its own namespace on the local broker, fills the
board with 50 desks, opens the page in Chromium (Playwright, Debian's chromium),
then publishes 200 events (a call ringing, then ended, desk after desk) and
times each from the publish's confirm until the desk's state shows on the page.
Also the server's CPU time per event (its process's user + system time). The
baseline measured in the same run is the broker's own round trip: the same
publish and a plain consumer receiving it. Target: p95 <= 250 ms.

    python bench/wallboard_latency.py [--events 200] [--desks 50]
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
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge import events
from bridge.config import load_settings
from bridge.simulate import find_script
from bridge.topology import declare_events, publish_event
from bridge.transport import Broker, OutgoingMessage


def message(desk: str, kind: str, call_id: str) -> OutgoingMessage:
    event = events.CallEvent(
        event_id=events.new_event_id(), kind=kind, direction="inbound", call_id=call_id,  # type: ignore[arg-type]
        caller_id="0791234567" if kind == "started" else None, desk=desk, extension=None,
        occurred_at=events.format_time(datetime.now(UTC)), argv=(),
    )  # fmt: skip
    return OutgoingMessage(event.routing_key, events.ENCODER.encode(event), event.event_id, f"call.{kind}", 0)


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
            broker.bind_queue(probe_queue, settings.exchange, "call.#")
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
                    desk = desks[n % len(desks)]
                    kind, state = ("started", "ringing") if n % 2 == 0 else ("ended", "idle")
                    call_id = f"{desk}-{n // 2}"
                    sent = time.perf_counter()
                    publish_event(broker, settings, message(desk, kind, call_id))
                    page.wait_for_selector(f'[data-desk="{desk}"][data-state="{state}"]', timeout=5000)
                    board.append((time.perf_counter() - sent) * 1000)
                    sent = time.perf_counter()
                    publish_event(broker, settings, message(f"probe-{n}", "started", f"p{n}"))
                    broker.get(probe_queue, timeout=5)
                    broker_only.append((time.perf_counter() - sent) * 1000)
                cpu = cpu_seconds(server.pid) - cpu_before
                browser.close()
            broker.delete_queue(probe_queue)
    finally:
        server.terminate()
        server.wait(20)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.events} events, {args.desks} desks on the board, broker {args.amqp_url.rsplit('@', 1)[-1]}")
    p50, p95 = statistics.median(board), percentile(board, 0.95)
    print(f"published -> in the page's DOM   p50 {p50:6.1f} ms   p95 {p95:6.1f} ms")
    print(f"baseline: publish -> a consumer   p50 {statistics.median(broker_only):6.1f} ms   "
          f"p95 {percentile(broker_only, 0.95):6.1f} ms")  # fmt: skip
    per_event = cpu / (2 * args.events) * 1000  # the probe events are call events too
    print(f"server CPU per call event: {per_event:.2f} ms")
    print(f"p95 {p95:.1f} ms (target <= 250 ms): {'OK' if p95 <= 250 else 'OVER'}")


if __name__ == "__main__":
    main()
