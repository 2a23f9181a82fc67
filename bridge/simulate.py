"""Realistic 3CX Assistant traffic: separate launches of the registered executable.

Every call is a script of launches with the seed's exact arguments, played at
compressed times (``speed`` simulated seconds per real second) on one of N desks:

* answered inbound   ``/N:S /C:<caller> /T:I /I:<id>``, ``/N:C /T:I /I:<id>``, ``/N:E /T:I /I:<id>``
* missed inbound     S then E
* outbound           ``/N:S /T:O /I:<number>``, C (if answered), E
* bursts             several calls ringing at the same moment on different desks

Callers are known contacts, unknown numbers, anonymous (``/C:``) or internal
extensions. ``seed`` makes a run reproducible.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

SAMPLE_CONTACTS = tuple(
    (f"{first} {last}", f"+41 {prefix} {n:03d} {10 + n % 90:02d} {20 + n % 70:02d}", company)
    for n, (first, last, prefix, company) in enumerate(
        [
            ("Anna", "Muster", "79", "Muster AG"),
            ("Beat", "Keller", "78", "Keller Treuhand"),
            ("Carla", "Rossi", "76", "Rossi Import"),
            ("Daniel", "Weber", "44", "Weber & Co"),
            ("Eva", "Schmid", "31", "Schmid Bau"),
            ("Fabio", "Bernasconi", "91", "Ticino Viaggi"),
            ("Gabi", "Meier", "61", "Meier Druck"),
            ("Hans", "Huber", "41", "Huber Holz"),
            ("Ines", "Favre", "22", "Favre Avocats"),
            ("Jonas", "Brunner", "52", "Brunner Velo"),
            ("Katrin", "Frei", "71", "Frei Optik"),
            ("Luca", "Ferrari", "79", "Ferrari Gelati"),
        ]
    )
)


class PlannedLaunch(NamedTuple):
    """One launch of the registered executable to play: when (real seconds from the start), where, with what.

    (What a launch says once parsed is bridge.launch.Launch.)
    """

    at: float
    desk: str
    argv: tuple[str, ...]


class Plan(NamedTuple):
    calls: list[list[PlannedLaunch]]
    kinds: dict[str, int]

    @property
    def launches(self) -> int:
        return sum(len(call) for call in self.calls)


def plan_traffic(
    calls: int, desks: Sequence[str], *, seed: int, speed: float = 60.0, minutes: float = 3.0
) -> Plan:
    """A reproducible mix of calls over ``minutes`` simulated minutes, compressed by speed."""
    rng = random.Random(seed)
    known = [phone for _, phone, _ in SAMPLE_CONTACTS]
    kinds = {"answered": 0, "missed": 0, "outbound": 0, "burst": 0}
    script: list[list[PlannedLaunch]] = []
    start = 0.0
    burst_left = 0
    for n in range(calls):
        if burst_left == 0 and rng.random() < 0.1:
            burst_left = rng.randint(3, 5)  # a burst: these calls ring at once
        if burst_left:
            burst_left -= 1
            kinds["burst"] += 1
        else:
            start += rng.expovariate(calls / (minutes * 60))
        desk = desks[n % len(desks)] if not burst_left else desks[rng.randrange(len(desks))]
        call_id = f"{seed}-{n:05d}"
        ring = rng.uniform(2, 25)
        talk = rng.uniform(10, 240)
        roll = rng.random()
        at = start / speed
        if roll < 0.2:
            number = (
                f"0{rng.choice(['44', '31', '61', '79'])} {rng.randint(100, 999)} {rng.randint(10, 99)} 00"
            )
            answered = rng.random() < 0.8
            launches = [PlannedLaunch(at, desk, ("/N:S", "/T:O", f"/I:{number}"))]
            if answered:
                launches.append(PlannedLaunch(at + ring / speed, desk, ("/N:C", "/T:O", f"/I:{number}")))
            launches.append(
                PlannedLaunch(
                    at + (ring + (talk if answered else 0)) / speed, desk, ("/N:E", "/T:O", f"/I:{number}")
                )
            )
            kinds["outbound"] += 1
        else:
            caller = rng.random()
            if caller < 0.5:
                caller_id = rng.choice(known).replace(" ", "")
            elif caller < 0.8:
                caller_id = f"07{rng.randint(5, 9)}{rng.randint(1000000, 9999999)}"
            elif caller < 0.9:
                caller_id = ""  # anonymous
            else:
                caller_id = str(rng.randint(100, 199))  # internal extension
            launches = [PlannedLaunch(at, desk, ("/N:S", f"/C:{caller_id}", "/T:I", f"/I:{call_id}"))]
            if roll < 0.75:
                launches.append(PlannedLaunch(at + ring / speed, desk, ("/N:C", "/T:I", f"/I:{call_id}")))
                launches.append(
                    PlannedLaunch(at + (ring + talk) / speed, desk, ("/N:E", "/T:I", f"/I:{call_id}"))
                )
                kinds["answered"] += 1
            else:
                launches.append(PlannedLaunch(at + ring / speed, desk, ("/N:E", "/T:I", f"/I:{call_id}")))
                kinds["missed"] += 1
        script.append(launches)
    return Plan(script, kinds)


class Outcome(NamedTuple):
    launched: int
    failed: int
    seconds: float


class Timing(NamedTuple):
    """When one launch ran (wall-clock seconds): its event's occurred_at lies between the two."""

    started: float
    finished: float
    returncode: int


def play(
    plan: Plan,
    notify: Sequence[str],
    env: dict[str, str],
    *,
    concurrency: int,
    on_launch: Callable[[PlannedLaunch, int], None] | None = None,
    timings: dict[tuple[int, int], Timing] | None = None,
) -> Outcome:
    """Play every call on its own schedule; at most ``concurrency`` launches run at once.

    timings, when given, gets (call index, launch index) -> Timing for every launch.
    """
    gate = threading.Semaphore(concurrency)
    lock = threading.Lock()
    counts = {"launched": 0, "failed": 0}
    started = time.monotonic()

    def run_call(number: int, call: list[PlannedLaunch]) -> None:
        for position, launch in enumerate(call):
            delay = started + launch.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with gate:
                began = time.time()
                done = subprocess.run(
                    [*notify, *launch.argv],
                    env={**env, "TCX_BRIDGE_DESK": launch.desk},
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
                if timings is not None:
                    timings[(number, position)] = Timing(began, time.time(), done.returncode)
            with lock:
                counts["launched"] += 1
                counts["failed"] += done.returncode != 0
            if on_launch is not None:
                on_launch(launch, done.returncode)

    workers = max(1, min(len(plan.calls), 256))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(run_call, range(len(plan.calls)), plan.calls))
    return Outcome(counts["launched"], counts["failed"], time.monotonic() - started)


def truth_lines(plan: Plan, timings: dict[tuple[int, int], Timing]) -> list[dict[str, Any]]:
    """The ground truth of a played plan: one object per call, with its events and expected times.

    ``ring_seconds`` and ``talk_seconds`` are bounds ``[low, high]`` in real seconds: an event's
    occurred_at lies between its launch's start and end, so a correct record falls inside them.
    ``number`` (the caller, or the number dialed), ``number_kind`` and ``callback`` (what the call
    does to a callback task: opens, adds, reaches, or null) are :func:`callback_truth`'s.
    """
    kinds = {"S": "started", "C": "connected", "E": "ended"}
    lines: list[dict[str, Any]] = []
    for number, call in enumerate(plan.calls):
        by_kind: dict[str, dict[str, Any]] = {}
        for position, launch in enumerate(call):
            timing = timings.get((number, position))
            by_kind[kinds[_options(launch.argv)["N"]]] = {
                "argv": list(launch.argv),
                "started": timing.started if timing else None,
                "finished": timing.finished if timing else None,
                "exit": timing.returncode if timing else None,
            }
        options = _options(call[0].argv)
        lines.append(
            {
                "desk": call[0].desk,
                "direction": "outbound" if options.get("T") == "O" else "inbound",
                "call_id": options.get("I"),
                "answered": "connected" in by_kind,
                "events": [{"kind": kind, **event} for kind, event in by_kind.items()],
                "ring_seconds": _bounds(by_kind, "started", "connected"),
                "talk_seconds": _bounds(by_kind, "connected", "ended"),
                "number": options.get("C") if options.get("T") != "O" else options.get("I"),
                "at": {kinds[_options(launch.argv)["N"]]: launch.at for launch in call},
            }
        )
    return callback_truth(lines)


def number_kind(number: str | None) -> str:
    """anonymous, internal (up to 6 digits, no leading 0) or external, as the consumers read it."""
    compact = re.sub(r"[\s().\-/]", "", number or "")
    if compact.lower() in ("", "anonymous", "unknown", "private", "withheld", "restricted", "unavailable"):
        return "anonymous"
    internal = compact.isdigit() and len(compact) <= 6 and not compact.startswith("0")
    return "internal" if internal else "external"


def callback_truth(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Who was missed and who was reached: each line gets number_kind and callback.

    In the order of the plan: an inbound call from an external number that was never
    answered ``opens`` a task for the number (from its start), or ``adds`` to the open
    one; a call with that number connected later (inbound answered or outbound
    connected) ``reaches`` it. Numbers compare as written without separators (a plan
    writes each caller one way).
    """
    moments: list[tuple[float, int, str]] = []
    for index, line in enumerate(lines):
        line["number_kind"] = number_kind(line["number"])
        line["callback"] = None
        if line["number_kind"] != "external":
            continue
        if line["answered"]:
            moments.append((line["at"]["connected"], index, "connected"))
        elif line["direction"] == "inbound" and "ended" in line["at"] and "started" in line["at"]:
            moments.append((line["at"]["started"], index, "missed"))
    open_tasks: set[str] = set()
    for _, index, what in sorted(moments):
        line = lines[index]
        number = re.sub(r"[\s().\-/]", "", line["number"])
        if what == "missed":
            line["callback"] = "adds" if number in open_tasks else "opens"
            open_tasks.add(number)
        elif number in open_tasks:
            line["callback"] = "reaches"
            open_tasks.discard(number)
    return lines


def _options(argv: Sequence[str]) -> dict[str, str]:
    return {item[1]: item[3:] for item in argv if len(item) > 2 and item[2] == ":"}


def _bounds(by_kind: dict[str, dict[str, Any]], start: str, end: str) -> list[float] | None:
    first, second = by_kind.get(start), by_kind.get(end)
    if not first or not second or first["started"] is None or second["started"] is None:
        return None
    return [second["started"] - first["finished"], second["finished"] - first["started"]]


def find_script(name: str) -> str | None:
    """An executable installed next to this Python, where pip puts the console scripts."""
    import shutil
    import sys

    return shutil.which(name, path=os.path.dirname(sys.executable))


def notify_command() -> list[str]:
    """The installed tcx-bridge-notify, or ``python -m bridge.notify``."""
    import sys

    found = find_script("tcx-bridge-notify")
    return [found] if found else [sys.executable, "-m", "bridge.notify"]
