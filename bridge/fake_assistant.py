"""A stand-in for ``tcx.assistant.client.exe``, for demos and simulations.

``tcx-bridge-fake-assistant -cmd makecall:NUMBER`` records the call in
``<data_dir>/fake-assistant.log`` and, like the real Assistant and PBX, then
reports the outbound call through the registered executable: ``/N:S /T:O``,
``/N:C /T:O`` and ``/N:E /T:O`` with ``/I:NUMBER``, a second apart, in the
background. Any other arguments (e.g. a screen-pop command template) are only
recorded. ``TCX_FAKE_ASSISTANT_FAIL=1`` makes it fail as if the Assistant were
not running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _log_path() -> Path:
    from bridge.config import load_settings

    return Path(load_settings().settings.data_dir) / "fake-assistant.log"


def play_outbound_call(number: str) -> None:
    """Launch the registered executable for an outbound call, as 3CX Assistant would.

    ``TCX_FAKE_ASSISTANT_UNANSWERED``: comma-separated numbers whose calls ring out unconnected
    (S, then E); ``TCX_FAKE_ASSISTANT_PAUSE``: seconds between the launches (default 1; talk is twice it).
    """
    from bridge.simulate import notify_command

    pause = float(os.environ.get("TCX_FAKE_ASSISTANT_PAUSE") or 1.0)
    unanswered = number in os.environ.get("TCX_FAKE_ASSISTANT_UNANSWERED", "").split(",")
    steps = (("S", pause), ("E", 0.0)) if unanswered else (("S", pause), ("C", 2 * pause), ("E", 0.0))
    for kind, wait in steps:
        subprocess.run(
            [*notify_command(), f"/N:{kind}", "/T:O", f"/I:{number}"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(wait)


USAGE = """usage: tcx-bridge-fake-assistant -cmd makecall:NUMBER

A stand-in for the 3CX Assistant (tcx.assistant.client.exe) for demos and
simulations: it records its arguments in <data_dir>/fake-assistant.log and, for
-cmd makecall:NUMBER, reports the outbound call through tcx-bridge-notify
(/N:S, /N:C, /N:E with /T:O /I:NUMBER, a second apart, in the background).
Other arguments are only recorded. TCX_FAKE_ASSISTANT_FAIL=1 makes it fail as
if the Assistant were not running. Use it with TCX_BRIDGE_ASSISTANT=tcx-bridge-fake-assistant.
  tcx-bridge-fake-assistant -cmd makecall:0791234567
"""
HELP = frozenset({"--help", "-h", "/?", "-?"})


def main() -> None:
    """Entry point of ``tcx-bridge-fake-assistant``."""
    argv = sys.argv[1:]
    if len(argv) == 1 and argv[0].lower() in HELP:  # a person asking: nothing recorded, nothing dialed
        sys.stdout.write(USAGE)
        return
    if argv[:1] == ["--play-call"]:
        play_outbound_call(argv[1])
        return
    path = _log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log:
        log.write(json.dumps(argv) + "\n")
    if os.environ.get("TCX_FAKE_ASSISTANT_FAIL") == "1":
        print("3CX Assistant is not running", file=sys.stderr)
        sys.exit(1)
    if len(argv) == 2 and argv[0] == "-cmd" and argv[1].startswith("makecall:"):
        subprocess.Popen(
            [sys.executable, "-m", "bridge.fake_assistant", "--play-call", argv[1][len("makecall:") :]],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


if __name__ == "__main__":
    main()
