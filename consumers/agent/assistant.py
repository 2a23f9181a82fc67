"""The local 3CX Assistant: is it running, and run it to dial (``<assistant> -cmd makecall:<number>``)."""

from __future__ import annotations

import subprocess

from bridge import events
from bridge.config import Settings
from consumers.agent.settings import AGENT


def assistant_running(name: str) -> bool:
    """True when a process of that name (case-insensitive, with or without .exe) runs on this desk."""
    import psutil  # only on desks that check

    wanted = {name.lower(), name.lower().removesuffix(".exe")}
    for process in psutil.process_iter(["name"]):
        found = (process.info.get("name") or "").lower()
        if found in wanted or found.removesuffix(".exe") in wanted:
            return True
    return False


def run_assistant(settings: Settings, number: str) -> tuple[events.DialStatus, str | None]:
    """Run ``<assistant> -cmd makecall:<number>`` (an argument list, never a shell)."""
    options = AGENT.of(settings)
    if options.assistant_process and not assistant_running(options.assistant_process):
        return "failed", "3CX Assistant is not running on this desk"
    command = [options.assistant, "-cmd", f"makecall:{number}"]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=options.assistant_timeout,
            check=False,
            shell=False,
        )
    except FileNotFoundError:
        return "failed", (
            f"the 3CX Assistant client {options.assistant!r} was not found; install it or "
            "set TCX_BRIDGE_ASSISTANT to its path"
        )
    except PermissionError:
        return (
            "failed",
            f"the 3CX Assistant client {options.assistant!r} cannot be run (permission denied)",
        )
    except subprocess.TimeoutExpired:
        return "failed", f"the 3CX Assistant did not finish within {options.assistant_timeout:g}s"
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        tail = f": {detail[-1][:200]}" if detail else ""
        return "failed", (
            f"the 3CX Assistant exited with status {done.returncode}{tail} (is it running and logged in?)"
        )
    return "dialed", None
