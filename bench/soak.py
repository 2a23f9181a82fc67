"""The chaos soak: simulated call traffic on a 3-node cluster while nodes and processes are killed.

Runs `tcx-bridge simulate --truth` (2,000 calls over 50 desks by default), the CRM
and analytics consumers, one desk agent per 10 desks, and dial requests queued
throughout. Meanwhile, at random times: kill -9 of a broker node (then restarted),
a graceful stop and start of a node, kill -9 of a consumer or an agent (then
restarted). Never two nodes down at once. At the end it compares analytics with
the simulator's ground truth and prints one table; it exits 1 unless lost = 0,
dialed twice = 0 and mismatches = 0.

    python bench/soak.py [--calls 2000] [--desks 50] [--seed 7] [--node-kills 4] [--process-kills 4]
    python bench/soak.py --urls amqp://u:p@mq1:5672/%2F,amqp://u:p@mq2:5672/%2F   # process kills only

Without --urls it starts its own 3-node cluster (tests/cluster.py) on ports of its
own, never the shared node on 5672, and removes it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.config import load_settings
from bridge.dial import request_dial
from bridge.errors import TransportError
from bridge.simulate import find_script
from tests.cluster import LocalCluster

FAKE_ASSISTANT = """#!{python}
import sys
with open({log!r}, "a") as log:
    log.write(sys.argv[-1] + "\\n")
"""
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


class Process:
    """A long-running tcx-bridge command, restartable, its output appended to one log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=out)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def log_times(path: Path, pattern: str) -> list[float]:
    """Wall-clock times of the log lines matching pattern."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        stamp = LOG_TIME.match(line)
        if stamp and re.search(pattern, line):
            found.append(datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--desks", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--node-kills", type=int, default=4, help="kill -9 of a node, then restart")
    parser.add_argument("--node-stops", type=int, default=1, help="graceful stop of a node, then start")
    parser.add_argument("--process-kills", type=int, default=4, help="kill -9 of a consumer or an agent")
    parser.add_argument("--dials", type=int, default=40, help="dial requests queued during the run")
    parser.add_argument("--urls", help="an existing cluster's URLs, comma-separated (no node kills then)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, stores)")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    cluster = None
    if args.urls:
        urls = args.urls
    else:
        print("starting a 3-node RabbitMQ cluster ...", flush=True)
        cluster = LocalCluster(3).start()
        urls = ",".join(cluster.urls)
    work = Path(tempfile.mkdtemp(prefix="tcx-soak-"))
    namespace = f"soak{uuid.uuid4().hex[:6]}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("TCX_BRIDGE_")}
    config = work / "config.toml"
    config.write_text("")
    base_env |= {
        "TCX_BRIDGE_AMQP_URL": urls,
        "TCX_BRIDGE_NAMESPACE": namespace,
        "TCX_BRIDGE_QUORUM": "true",
        "TCX_BRIDGE_CONFIG": str(config),
        "TCX_BRIDGE_DIAL_CONFIRM_TIMEOUT": "0",
        "TCX_BRIDGE_REPLAY_INTERVAL": "2",
    }
    assistant_log = work / "assistant.log"
    assistant = work / "fake-assistant"
    assistant.write_text(FAKE_ASSISTANT.format(python=sys.executable, log=str(assistant_log)))
    assistant.chmod(0o755)
    cli = find_script("tcx-bridge") or "tcx-bridge"
    server_env = {**base_env, "TCX_BRIDGE_DATA_DIR": str(work / "server")}
    subprocess.run([cli, "topology", "declare"], env=server_env, check=True, capture_output=True)

    processes: list[Process] = []
    for name in ("crm", "analytics"):
        processes.append(Process(name, [cli, "consume", name], server_env, work / f"{name}.log"))
    agent_desks = [f"sim-{n}" for n in range(1, args.desks + 1, 10)]
    for desk in agent_desks:
        env = {
            **base_env,
            "TCX_BRIDGE_DESK": desk,
            "TCX_BRIDGE_DATA_DIR": str(work / desk),
            "TCX_BRIDGE_ASSISTANT": str(assistant),
        }
        processes.append(Process(f"agent {desk}", [cli, "agent"], env, work / f"agent-{desk}.log"))
    time.sleep(5)  # consumers and agents declare and start consuming

    truth = work / "truth.jsonl"
    desk_env = {**base_env, "TCX_BRIDGE_DATA_DIR": str(work / "desks")}
    simulation = subprocess.Popen(
        [cli, "simulate", "--calls", str(args.calls), "--desks", str(args.desks), "--seed", str(args.seed),
         "--speed", str(args.speed), "--concurrency", str(args.concurrency), "--truth", str(truth)],
        env=desk_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    started = time.time()
    chaos_log: list[tuple[float, str]] = []
    done = threading.Event()

    def chaos() -> None:
        actions = ["node-kill"] * (args.node_kills if cluster else 0)
        actions += ["node-stop"] * (args.node_stops if cluster else 0)
        actions += ["process-kill"] * args.process_kills
        rng.shuffle(actions)
        for action in actions:
            if done.wait(rng.uniform(3, 8)):
                break
            if action.startswith("node") and cluster is not None:
                victim = rng.randrange(cluster.size)
                if action == "node-kill":
                    cluster.kill(victim)
                else:
                    cluster.stop_node(victim)
                chaos_log.append((time.time(), f"{action} {cluster.node(victim)}"))
                time.sleep(rng.uniform(1, 4))
                cluster.restart(victim)  # back (and rejoined) before the next action: never two down
                chaos_log.append((time.time(), f"node-start {cluster.node(victim)}"))
            else:
                victim_process = rng.choice(processes)
                victim_process.kill()
                chaos_log.append((time.time(), f"process-kill {victim_process.name}"))
                time.sleep(rng.uniform(0.5, 2))
                victim_process.start()

    def dials() -> None:
        for n in range(args.dials):
            if done.wait(rng.uniform(0.5, 2.5)):
                return
            desk = agent_desks[n % len(agent_desks)]
            number = f"0449{n:06d}"  # one number per request: a second makecall of it is a double dial
            request_id = f"soak-{n}"
            settings = load_settings(environ=server_env).settings
            for _ in range(30):  # a CRM retries with the same request_id until the broker confirms
                try:
                    request_dial(settings, number, desk=desk, request_id=request_id, requested_by="soak")
                    queued.append(number)
                    break
                except TransportError:
                    time.sleep(1)

    queued: list[str] = []
    threads = [threading.Thread(target=chaos), threading.Thread(target=dials)]
    for thread in threads:
        thread.start()
    output, _ = simulation.communicate()
    done.set()
    for thread in threads:
        thread.join()
    simulated_seconds = time.time() - started
    subprocess.run([cli, "spool", "flush"], env=desk_env, capture_output=True)  # what a launch outboxed

    calls = [json.loads(line) for line in truth.read_text().splitlines()]
    launched = sum(len(call["events"]) for call in calls)
    analytics_db = work / "server" / "analytics.sqlite3"

    def processed() -> int:
        try:
            with sqlite3.connect(analytics_db) as db:
                return int(db.execute("SELECT count(*) FROM processed").fetchone()[0])
        except sqlite3.Error:
            return 0

    deadline = time.time() + 120
    while processed() < launched and time.time() < deadline:
        time.sleep(1)
    time.sleep(3)  # dial results and late duplicates
    for process in processes:
        process.stop()

    with sqlite3.connect(analytics_db) as db:
        db.row_factory = sqlite3.Row
        records = [dict(row) for row in db.execute("SELECT * FROM calls")]
    by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for record in records:
        by_key.setdefault((record["desk"], record["direction"], record["call_id"]), []).append(record)
    mismatches = []
    for call in calls:
        found = by_key.get((call["desk"], call["direction"], call["call_id"]), [])
        if len(found) != 1:
            mismatches.append(f"{call['call_id']}: {len(found)} records")
            continue
        record = found[0]
        if bool(record["answered"]) != call["answered"] or record["ended_at"] is None:
            mismatches.append(f"{call['call_id']}: answered/ended differ")
        for field in ("ring_seconds", "talk_seconds"):
            bounds, value = call[field], record[field]
            if bounds is None:
                if value is not None:
                    mismatches.append(f"{call['call_id']}: {field} {value} but expected none")
            elif value is None or not bounds[0] - 0.002 <= value <= bounds[1] + 0.002:
                mismatches.append(f"{call['call_id']}: {field} {value} outside {bounds}")
    analytics_log = work / "analytics.log"
    duplicates = analytics_log.read_text(errors="replace").count("outcome=duplicate")
    dialed = (
        Counter(line.strip().removeprefix("makecall:") for line in assistant_log.read_text().splitlines())
        if assistant_log.exists()
        else Counter()
    )

    gaps = []
    for process in processes:
        if process.name not in ("crm", "analytics"):
            continue
        losses = log_times(process.log, r"broker lost|consumer=\S+ stopped") + [
            when for when, what in chaos_log if what == f"process-kill {process.name}"
        ]
        resumed = log_times(process.log, r"consumer=\S+ consuming")
        for lost in losses:
            after = [when for when in resumed if when >= lost - 0.01]
            if after:
                gaps.append(min(after) - lost)
    node_events = sum(1 for _, what in chaos_log if what.startswith(("node-kill", "node-stop")))
    node_stops = sum(1 for _, what in chaos_log if what.startswith("node-stop"))
    process_kills = sum(1 for _, what in chaos_log if what.startswith("process-kill"))
    lost = launched - processed()
    dialed_twice = sum(1 for count in dialed.values() if count > 1)
    rows = [
        ("calls simulated", len(calls)),
        ("launches (events)", launched),
        ("calls in analytics", len(records)),
        ("events lost", lost),
        ("events duplicated at the consumer (dropped)", duplicates),
        ("ring/talk mismatches", len(mismatches)),
        ("dial requests queued", len(queued)),
        ("dial requests dialed", len(dialed)),
        ("dial requests dialed twice", dialed_twice),
        (
            "node kills / graceful stops",
            f"{node_events - node_stops} / {node_stops}",
        ),
        ("process kills", process_kills),
        ("longest consumer gap after a kill", f"{max(gaps, default=0):.1f} s"),
        ("traffic played in", f"{simulated_seconds:.0f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    print(output.strip())
    for when, what in chaos_log:
        print(f"  +{when - started:6.1f}s {what}")
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    for line in mismatches[:10]:
        print("mismatch:", line)
    if cluster is not None:
        cluster.close()
    if args.keep:
        print(f"work dir kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    ok = lost == 0 and dialed_twice == 0 and not mismatches
    print("OK" if ok else "FAILED: lost, dialed twice and mismatches must all be 0")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
