"""Attacks on the desk fast path's endpoint, as another local user or a hostile local process would try.

Only the agent's own OS user can reach its socket (tests/test_handoff.py); these
check what is left: a frame no launch makes, sent by a process of that user,
must not end the fast path for the launches after it; and a socket of another
user where the agent's should be (a symlink swapped in, a squatting fake agent)
is never believed, nor told the launch's numbers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bridge import handoff, launcher
from consumers.agent.handoff import HandoffServer
from tests.test_handoff import server, settings_for  # noqa: F401  # the fixture

LAUNCH = ["/N:S", "/C:0791234567", "/T:I", "/I:42"]


def environ_of(data_dir: str) -> dict[str, str]:
    return {"TCX_BRIDGE_DATA_DIR": data_dir, "TCX_BRIDGE_CONFIG": os.devnull, "TCX_BRIDGE_DESK": "d1"}


def test_no_hostile_frame_stops_the_fast_path(server: HandoffServer) -> None:  # noqa: F811
    """A start time past what a datetime holds raised OverflowError in the hand-off thread, which died:
    every launch after it waited for the timeout and went its own way until the agent restarted."""
    environ = environ_of(server.settings.data_dir)
    hostile = [
        handoff.encode_launch(LAUNCH, environ, 1, 10**30, handoff.new_event_id()),  # year 3e13
        handoff.encode_launch(LAUNCH, environ, 1, time.time_ns(), "a\nb"),  # a line break in a file name
        handoff.encode_launch(LAUNCH, environ, 1, time.time_ns(), "../../elsewhere"),
        handoff.encode_launch(LAUNCH, environ, 1, time.time_ns(), "x" * 100_000),
        b'{"routing_key":"k","message_id":"../x","type":"call","timestamp":1,"app_id":"a","body":{}}',
        b"tcx-launch-1\x00" + b"9" * 5000 + b"\x001\x00e\x000",  # past int()'s limit
        os.urandom(4096),
    ]
    for frame in hostile:
        answer = handoff.send(frame, server.directory, 2.0)
        assert answer.startswith(b"no "), answer
    assert launcher.hand_launch(LAUNCH, environ, server.directory) == 0  # the next launch is handed
    assert server.handed == 1
    assert [path.name for path in Path(server.settings.data_dir).rglob("elsewhere*")] == []


FAKE_AGENT = """
import socket, sys
listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])
listener.listen(1)
print("listening", flush=True)
connection, _ = listener.accept()
connection.settimeout(2)
got = b""
try:
    while chunk := connection.recv(65536):
        got += chunk
except OSError:
    pass
try:
    connection.sendall(b"ok 0 handed, trust me\\n")
except OSError:
    pass
print(len(got), flush=True)
"""


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a fake agent as another user (nobody)")
def test_a_fake_agent_of_another_user_is_neither_believed_nor_told_the_launch() -> None:
    """nobody squats a socket and the agent's path leads there (a symlink swapped in after the launch
    checked the directory): the launch sees the other uid, sends nothing and publishes itself."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    with tempfile.TemporaryDirectory() as base:
        os.chmod(base, 0o755)
        theirs = Path(base, "theirs")
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        fake = subprocess.Popen(
            [python, "-I", "-S", "-c", FAKE_AGENT, str(theirs / "s.sock")],
            stdout=subprocess.PIPE, text=True, user=65534, group=65534, extra_groups=[],
        )  # fmt: skip
        try:
            assert fake.stdout is not None
            assert fake.stdout.readline().strip() == "listening"
            data = Path(base, "data")
            directory = Path(handoff.directory_of(data))
            directory.mkdir(mode=0o700, parents=True)
            (directory / handoff.SOCKET).symlink_to(theirs / "s.sock")
            assert handoff.send(b"x", directory, 1.0) == b"the hand-off socket is another user's"
            assert launcher.hand_launch(LAUNCH, environ_of(str(data)), directory) is None  # its own path
        finally:
            fake.kill()
            told, _ = fake.communicate(timeout=10)
    assert told.split()[1:] in ([], ["0"])  # the fake agent got not one byte of either launch
