"""The registered executable's front: hand the launch to the running desk agent, else run bridge.notify.

``tcx-bridge-notify`` starts here. Before anything else is imported (only the
standard library's os, sys, socket, time), the launch as it came (argv, the
TCX_BRIDGE_ environment, its start time) goes to the desk agent's socket in
the data dir the environment names (``TCX_BRIDGE_DATA_DIR``, else the platform's
data dir). The agent reads the settings the launch would read, builds its
event with ``bridge.notify``'s own code, stores it (fsync) and answers
``ok <exit status> <outcome line>``; the launch exits with that status. Any
other answer, or none within ``TCX_BRIDGE_HANDOFF_TIMEOUT`` seconds (default
0.025; 0 turns the hand-off off), and ``bridge.notify`` runs as before. The
endpoint is ``TCX_BRIDGE_HANDOFF_ENDPOINT``'s (auto: the Unix socket where
there is one, else 127.0.0.1 with the agent's secret, bridge.loopback, which
only then is imported).
"""

from __future__ import annotations

import os
import sys
import time

from bridge import handoff

TYPE_CHECKING = False  # typing is not imported on this path (mypy reads this name as typing's)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

APP_NAME = "tcx-bridge"  # bridge.keys.APP_NAME (not imported: it loads the settings machinery)
DEFAULT_TIMEOUT = 0.025  # bridge.keys: handoff_timeout's default
HELP = frozenset({"--help", "-h", "/?", "-?", "/h", "/help"})  # bridge.notify.HELP


def data_dir(environ: Mapping[str, str]) -> str:
    """Where the launch's data dir is, as bridge.keys.platform_dir finds it; a data_dir set in the TOML
    file is not seen here (bridge.notify hands over then)."""
    explicit = environ.get("TCX_BRIDGE_DATA_DIR", "").strip()
    if explicit:
        return explicit
    home = os.path.expanduser("~")  # as Path.home()
    if sys.platform == "win32":
        base = environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
        return os.path.join(base, APP_NAME)
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Application Support", APP_NAME)
    base = environ.get("XDG_DATA_HOME", "").strip() or os.path.join(home, ".local", "share")
    return os.path.join(base, APP_NAME)


def timeout_of(environ: Mapping[str, str]) -> float:
    """handoff_timeout from the environment (0 when it is not a number: bridge.notify then says why)."""
    raw = environ.get("TCX_BRIDGE_HANDOFF_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        return max(float(raw), 0.0)
    except ValueError:
        return 0.0


def endpoint_of(environ: Mapping[str, str]) -> str:
    """handoff_endpoint from the environment (bridge.keys: auto by default; a bad value hands nothing
    over, bridge.notify then says why)."""
    return environ.get("TCX_BRIDGE_HANDOFF_ENDPOINT", "").strip() or "auto"


def hand_launch(
    argv: Sequence[str],
    environ: Mapping[str, str],
    directory: str | os.PathLike[str],
    given: tuple[str, int] | None = None,
) -> int | None:
    """The exit status when the desk agent at directory took the launch; None when bridge.notify must run.

    given: the event's id and start time (time.time_ns()), which bridge.notify then reuses.
    """
    event_id, started = given or (handoff.new_event_id(), time.time_ns())
    timeout = timeout_of(environ)
    if timeout <= 0 or (len(argv) == 1 and argv[0].lower() in HELP):
        return None
    frame = handoff.encode_launch(argv, environ, os.getpid(), started, event_id)
    answer = handoff.send(frame, directory, timeout, endpoint_of(environ))
    word, _, rest = answer.partition(b" ")
    status, _, line = rest.partition(b" ")
    if word != handoff.OK or not status.isdigit():
        return None
    if line and sys.stderr is not None and sys.stderr.isatty():
        sys.stderr.write(f"tcx-bridge-notify: {line.decode(errors='replace')}\n")
    return int(status)


def main() -> None:
    """Entry point of ``tcx-bridge-notify`` and ``tcx-bridge-notifyw``."""
    given = (handoff.new_event_id(), time.time_ns())
    directory = handoff.directory_of(data_dir(os.environ))
    status = hand_launch(sys.argv[1:], os.environ, directory, given)
    if status is None:  # the event the agent may have stored is this one: the same id and time
        from bridge.notify import main as notify

        notify(directory if timeout_of(os.environ) > 0 else None, given)
    sys.exit(status)


if __name__ == "__main__":
    main()
