"""Screen-pop latency with 1,000,000 contacts: from the notify launch to the pop on tcx.commands.

Imports N contacts (default 1,000,000) into the SQLite store, starts the CRM
consumer (``tcx-bridge consume crm``) and the desk agent (``tcx-bridge agent``),
then for each sample launches ``tcx-bridge-notify /N:S /C:<a known number> /T:I
/I:<n>`` and waits for the pop, interleaving the desk fast path (the launch hands
its event to the agent) with today's path (``TCX_BRIDGE_HANDOFF_TIMEOUT=0``: the
launch publishes itself). Baselines measured in the same run: the notify launch
alone (the pop cannot come sooner), and the contact lookup itself at 1,000
contacts against the full store. Target: launch to pop p95 <= 50 ms on the fast path.

The commands run from a fresh virtualenv holding only the runtime dependencies,
as on a desk (bench/notify_latency.py's desk_venv); ``--venv DIR`` reuses one.

    python bench/popup_latency.py [--contacts 1000000] [--samples 40] [--venv DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from notify_latency import desk_venv  # bench/ is the script's directory: on sys.path

from bridge.config import load_settings
from bridge.topology import declare_commands
from bridge.transport import Broker
from consumers.crm.contacts import SqliteContacts


def write_csv(path: Path, count: int) -> list[str]:
    """count contacts with distinct Swiss mobile numbers; return a sample of their numbers."""
    with path.open("w") as handle:
        handle.write("name,phone,company,email,url\n")
        for n in range(count):
            handle.write(
                f"Contact {n},+41 7{n // 10_000_000 % 10 + 5} {n % 10_000_000:07d},"
                f"Company {n % 5000},c{n}@example.com,https://crm.example.com/c/{n}\n"
            )
    rng = random.Random(7)
    return [f"07{n // 10_000_000 % 10 + 5}{n % 10_000_000:07d}" for n in rng.sample(range(count), 200)]


def lookup_micro(store: SqliteContacts, numbers: list[str]) -> tuple[float, float]:
    samples = []
    for number in numbers:
        e164 = "+41" + number[1:]
        started = time.perf_counter()
        assert store.lookup(e164) is not None
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6, sorted(samples)[int(0.95 * (len(samples) - 1))] * 1e6


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[round(fraction * (len(ordered) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("TCX_BRIDGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    )
    parser.add_argument(
        "--venv", type=Path, help="A virtualenv with tcx-bridge installed (default: a fresh one)."
    )
    args = parser.parse_args()
    venv = args.venv or desk_venv()
    bin_dir = venv / "bin"
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="tcx-bench-"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TCX_BRIDGE_")},
        "TCX_BRIDGE_AMQP_URL": args.amqp_url,
        "TCX_BRIDGE_NAMESPACE": namespace,
        "TCX_BRIDGE_DATA_DIR": str(work / "data"),
        "TCX_BRIDGE_DESK": "bench",
        "TCX_BRIDGE_CONFIG": str(work / "config.toml"),
    }
    (work / "config.toml").write_text("")
    settings = load_settings(environ=env).settings
    consumer = agent = None
    try:
        small_csv, big_csv = work / "small.csv", work / "contacts.csv"
        small_numbers = write_csv(small_csv, 1000)
        small = SqliteContacts(work / "small.sqlite3")
        small.import_file(small_csv, "CH")
        numbers = write_csv(big_csv, args.contacts)
        started = time.perf_counter()
        done = subprocess.run(
            [str(bin_dir / "tcx-bridge"), "contacts", "import", str(big_csv)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        import_seconds = time.perf_counter() - started
        big = SqliteContacts(Path(settings.data_dir) / "contacts.sqlite3")
        small_p50, small_p95 = lookup_micro(small, small_numbers)
        big_p50, big_p95 = lookup_micro(big, numbers)

        with Broker(args.amqp_url) as broker:
            declare_commands(broker, settings)
            pops = broker.declare_private_queue()
            broker.bind_queue(pops, settings.commands_exchange, "desk.*.popup")
            consumer = subprocess.Popen(
                [str(bin_dir / "tcx-bridge"), "consume", "crm"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 30
            while (info := broker.queue_info(settings.queue("crm"))) is None or info[1] == 0:
                if time.monotonic() > deadline:
                    raise SystemExit("the CRM consumer did not start")
                time.sleep(0.05)
            agent = subprocess.Popen(
                [str(bin_dir / "tcx-bridge"), "agent"],
                # a pop the agent takes too runs nothing (no browser on a bench machine)
                env={**env, "TCX_BRIDGE_ASSISTANT": "/bin/true", "TCX_BRIDGE_POPUP_COMMAND": "/bin/true"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            socket_path = Path(settings.data_dir) / "agent" / "handoff.sock"
            while (
                not socket_path.exists()
                or (broker.queue_info(settings.queue("desk.bench")) or (0, 0))[1] == 0
            ):
                if time.monotonic() > deadline + 30:
                    raise SystemExit("the desk agent did not start")
                time.sleep(0.05)
            variants = {"fast": env, "today": {**env, "TCX_BRIDGE_HANDOFF_TIMEOUT": "0"}}
            pop_times: dict[str, list[float]] = {name: [] for name in variants}
            notify_times: dict[str, list[float]] = {name: [] for name in variants}
            for n in range(args.samples):
                for name in list(variants)[n % 2 :] + list(variants)[: n % 2]:  # each goes first in turn
                    number = numbers[(2 * n + (name == "today")) % len(numbers)]
                    started = time.perf_counter()
                    subprocess.run(
                        [str(bin_dir / "tcx-bridge-notify"), "/N:S", f"/C:{number}", "/T:I", f"/I:{name}{n}"],
                        env=variants[name],
                        check=True,
                    )
                    notify_times[name].append(time.perf_counter() - started)
                    delivery = broker.get(pops, timeout=10)
                    pop_times[name].append(time.perf_counter() - started)
                    assert delivery is not None, "no pop"
                    assert json.loads(delivery.body)["contact"] is not None
    finally:
        for process in (consumer, agent):
            if process is not None:
                process.terminate()
                process.wait(20)
        with Broker(args.amqp_url) as broker:
            for queue in (
                settings.queue("desk.bench"),
                settings.queue("crm"),
                f"{settings.queue('crm')}.retry",
                settings.dead_queue("crm"),
                settings.unrouted_exchange,
            ):
                broker.delete_queue(queue)
            for exchange in (
                settings.exchange,
                settings.unrouted_exchange,
                settings.dead_exchange,
                settings.commands_exchange,
            ):
                broker.delete_exchange(exchange)
        shutil.rmtree(work, ignore_errors=True)
        if args.venv is None:
            shutil.rmtree(venv, ignore_errors=True)

    print(f"{done.stdout.strip()} in {import_seconds:.1f} s")
    print(f"lookup   {args.contacts:>9} contacts: p50 {big_p50:6.1f} us   p95 {big_p95:6.1f} us")
    print(f"lookup   {1000:>9} contacts: p50 {small_p50:6.1f} us   p95 {small_p95:6.1f} us   (baseline)")
    for name in ("fast", "today"):
        path = "desk fast path" if name == "fast" else "today's path  "
        print(
            f"{path} notify launch alone:  p50 {percentile(notify_times[name], 0.5) * 1000:6.1f} ms   "
            f"p95 {percentile(notify_times[name], 0.95) * 1000:6.1f} ms   (baseline)"
        )
        print(
            f"{path} launch to pop ({args.samples}): p50 {percentile(pop_times[name], 0.5) * 1000:6.1f} ms   "
            f"p95 {percentile(pop_times[name], 0.95) * 1000:6.1f} ms"
        )
    fast_p95 = percentile(pop_times["fast"], 0.95) * 1000
    verdict = "OK" if fast_p95 <= 50 else "OVER"
    print(f"fast path launch to pop p95 {fast_p95:.1f} ms (target <= 50 ms): {verdict}")


if __name__ == "__main__":
    main()
