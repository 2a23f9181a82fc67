"""Wall time of one launch of the registered executable, against a minimal pika floor.

Interleaves, in the same run against the same broker:
  * fast:   ``tcx-bridge-notify /N:S /C:0791234567 /T:I /I:<n>`` (a fresh process, as the Assistant runs
            it) with the desk agent running: the launch hands its event over (bridge.handoff);
  * notify: the same launch on today's path (``TCX_BRIDGE_HANDOFF_TIMEOUT=0``: connect, publish, confirm);
  * floor:  a fresh Python process that imports pika, connects and publishes one
            persistent message with publisher confirms.
Prints median, p95 and peak RSS of each, and the ratios (targets: notify at most
1.15x the floor; fast at most 0.35x the floor's median and 0.5x at p95, its peak
RSS below notify's). Every handed event is checked to reach the broker.

``--endpoint tcp`` measures the fast path on 127.0.0.1 with the agent's secret
(handoff_endpoint = tcp, as on Windows and macOS) beside the Unix socket's: two
agents of their own, each with a data dir of its own, the launches of both
interleaved with the others (``fast`` and ``fasttcp``).

Both run in a fresh virtualenv holding only the runtime dependencies, as on a
desk (the development venv has test tools such as typing_extensions that msgspec
imports when present); ``--venv DIR`` reuses one.

    python bench/notify_latency.py [--runs 40] [--amqp-url URL] [--venv DIR] [--endpoint unix|tcp]
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
from pathlib import Path

# Linux keeps a process's peak RSS across fork+exec, so children forked from this
# process (which imports pika) would report at least our own RSS. A small launcher,
# started before anything heavy is imported, forks every measured process instead.
LAUNCHER = """
import json, os, subprocess, sys, time
for line in sys.stdin:
    command, env = json.loads(line)
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    error = process.stderr.read().decode()
    print(json.dumps([elapsed, usage.ru_maxrss, os.waitstatus_to_exitcode(status), error]), flush=True)
"""
_launcher = subprocess.Popen(
    [sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.config import load_settings  # noqa: E402
from bridge.topology import declare_events  # noqa: E402
from bridge.transport import Broker  # noqa: E402

FLOOR = """
import sys, pika
connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
channel = connection.channel()
channel.confirm_delivery()
channel.basic_publish(sys.argv[2], "call.started.inbound.floor", b'{"call_id":"1"}',
                      pika.BasicProperties(content_type="application/json", delivery_mode=2), mandatory=True)
connection.close()
"""


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child process."""
    assert _launcher.stdin is not None
    assert _launcher.stdout is not None
    _launcher.stdin.write(json.dumps([command, env]) + "\n")
    _launcher.stdin.flush()
    elapsed, max_rss, status, stderr = json.loads(_launcher.stdout.readline())
    if status != 0:
        raise SystemExit(f"{command[0]} failed with {status}: {stderr}")
    return elapsed, max_rss


def desk_venv() -> Path:
    """A fresh virtualenv with tcx-bridge and its runtime dependencies only (compiled, as pip leaves it)."""
    venv = Path(tempfile.mkdtemp(prefix="tcx-bench-venv-"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--compile", str(ROOT)],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return venv


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def summary(name: str, samples: list[float], rss: list[int]) -> str:
    return (
        f"{name:<7} median {statistics.median(samples) * 1000:7.1f} ms   p95 {p95(samples) * 1000:7.1f} ms   "
        f"peak RSS median {statistics.median(rss) / 1024:5.1f} MiB, max {max(rss) / 1024:5.1f} MiB"
    )


def start_agent(venv: Path, env: dict[str, str], socket_path: Path) -> subprocess.Popen[bytes]:
    """The desk agent of the desk venv, running until its hand-off socket (or handoff.tcp) is there."""
    agent = subprocess.Popen(
        [str(venv / "bin" / "tcx-bridge"), "agent"],
        env={**env, "TCX_BRIDGE_ASSISTANT": "/bin/true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not socket_path.exists():
        if agent.poll() is not None or time.monotonic() > deadline:
            agent.kill()
            raise SystemExit("the desk agent did not start its hand-off socket")
        time.sleep(0.05)
    time.sleep(1.0)  # connected and consuming
    return agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("TCX_BRIDGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    )
    parser.add_argument(
        "--venv", type=Path, help="A virtualenv with tcx-bridge installed (default: a fresh one)."
    )
    parser.add_argument(
        "--endpoint",
        choices=("unix", "tcp"),
        default="unix",
        help="tcp: also the fast path on 127.0.0.1 with the agent's secret, beside the Unix socket's",
    )
    args = parser.parse_args()

    venv = args.venv or desk_venv()
    python = str(venv / "bin" / "python")
    notify = str(venv / "bin" / "tcx-bridge-notify")
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    data_dir = tempfile.mkdtemp(prefix="tcx-bench-")
    # As on a desk: no TCX_BRIDGE_CONFIG or TCX_BRIDGE_DATA_DIR, so the platform dirs are looked up.
    # as on a desk: bytecode cached (pip compiles it at install), never recompiled at each launch
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TCX_BRIDGE_") and key != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        TCX_BRIDGE_AMQP_URL=args.amqp_url,
        TCX_BRIDGE_NAMESPACE=namespace,
        TCX_BRIDGE_DESK="bench",
        XDG_CONFIG_HOME=f"{data_dir}/config",
        XDG_DATA_HOME=f"{data_dir}/data",
        APPDATA=data_dir,
        LOCALAPPDATA=data_dir,
    )
    settings = load_settings(environ=env).settings
    with Broker(args.amqp_url) as broker:
        declare_events(broker, settings)  # both sides publish to an existing exchange
        broker.declare_queue(f"{namespace}.sink")
        broker.bind_queue(f"{namespace}.sink", settings.exchange, "#")

    sink = f"{namespace}.sink"
    socket_path = Path(data_dir) / "data" / "tcx-bridge" / "agent" / "handoff.sock"
    agents = [start_agent(venv, env, socket_path)]
    # the tcp endpoint's desk: the same settings but the endpoint, in a data dir of its own
    tcp_env = {**env, "XDG_DATA_HOME": f"{data_dir}/tcp", "TCX_BRIDGE_HANDOFF_ENDPOINT": "tcp"}
    commands = {
        "fast": lambda n: ([notify, "/N:S", "/C:0791234567", "/T:I", f"/I:fast{n}"], env),
        "fasttcp": lambda n: ([notify, "/N:S", "/C:0791234567", "/T:I", f"/I:fast{n}"], tcp_env),
        "notify": lambda n: (
            [notify, "/N:S", "/C:0791234567", "/T:I", f"/I:{n}"],
            {**env, "TCX_BRIDGE_HANDOFF_TIMEOUT": "0"},
        ),
        "floor": lambda n: ([python, "-c", FLOOR, args.amqp_url, settings.exchange], env),
    }
    logs = {"fast": Path(data_dir) / "data" / "tcx-bridge" / "logs" / "notify.log"}  # the outcome lines
    if args.endpoint == "tcp":
        tcp_file = Path(data_dir) / "tcp" / "tcx-bridge" / "agent" / "handoff.tcp"
        agents.append(start_agent(venv, tcp_env, tcp_file))
        logs["fasttcp"] = Path(data_dir) / "tcp" / "tcx-bridge" / "logs" / "notify.log"
    else:
        del commands["fasttcp"]
    times: dict[str, list[float]] = {name: [] for name in commands}
    rss: dict[str, list[int]] = {name: [] for name in commands}
    try:
        for warmup in range(3):
            for name in commands:
                timed(*commands[name](f"warm{warmup}"))
        for n in range(args.runs):
            names = list(commands)
            for name in names[n % len(names) :] + names[: n % len(names)]:  # each goes first in turn
                seconds, peak = timed(*commands[name](n))
                times[name].append(seconds)
                rss[name].append(peak)
        expected = len(commands) * (args.runs + 3)  # every launch's event and every floor message
        with Broker(args.amqp_url) as broker:
            deadline = time.monotonic() + 30
            while (info := broker.queue_info(sink)) is not None and info[0] < expected:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {info[0]} of {expected} messages reached the broker")
                time.sleep(0.1)
        handed = {
            name: sum(" handed " in line and "call_id=fast" in line for line in log.read_text().splitlines())
            for name, log in logs.items()
        }
    finally:
        for agent in agents:
            agent.terminate()
            agent.wait(20)
        with Broker(args.amqp_url) as broker:
            for queue in (sink, settings.unrouted_exchange, settings.queue("desk.bench")):
                broker.delete_queue(queue)
            for exchange in (settings.exchange, settings.unrouted_exchange, settings.commands_exchange):
                broker.delete_exchange(exchange)
        shutil.rmtree(data_dir, ignore_errors=True)
        if args.venv is None:
            shutil.rmtree(venv, ignore_errors=True)

    print(f"{args.runs} interleaved launches each, broker {settings.amqp_url.split('@')[-1]}, venv {venv}")
    for name in commands:
        print(summary(name, times[name], rss[name]))
    floor_median, floor_p95 = statistics.median(times["floor"]), p95(times["floor"])
    ratio = statistics.median(times["notify"]) / floor_median
    print(f"notify  median {ratio:.2f}x the floor (target <= 1.15x): {'OK' if ratio <= 1.15 else 'OVER'}")
    for name in logs:
        fast, fast_p95 = statistics.median(times[name]) / floor_median, p95(times[name]) / floor_p95
        verdict = "OK" if fast <= 0.35 and fast_p95 <= 0.5 else "OVER"
        print(f"{name:<7} median {fast:.2f}x, p95 {fast_p95:.2f}x the floor (targets 0.35x, 0.5x): {verdict}")
        lighter = statistics.median(rss[name]) / statistics.median(rss["notify"])
        print(f"{name:<7} peak RSS (median) {lighter:.2f}x today's path: {'OK' if lighter < 1 else 'OVER'}")
        print(f"{name:<7} {handed[name]} of {args.runs + 3} launches handed over; the others published")
    if "fasttcp" in times:
        ratio = statistics.median(times["fasttcp"]) / statistics.median(times["fast"])
        print(f"fasttcp median {ratio:.2f}x the Unix socket's fast path")


if __name__ == "__main__":
    main()
