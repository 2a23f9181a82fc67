"""Attacks on the desk fast path's endpoint, as another local user or a hostile local process would try.

Only the agent's own OS user can reach its socket (tests/test_handoff.py); these
check what is left: a frame no launch makes, sent by a process of that user,
must not end the fast path for the launches after it; and a socket of another
user where the agent's should be (a symlink swapped in, a squatting fake agent)
is never believed, nor told the launch's numbers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from bridge import handoff, launcher, loopback
from consumers.agent.handoff import READ_TIMEOUT, REFUSAL_WINDOW, REFUSALS_LOGGED, HandoffServer
from tests.conftest import wait_until
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


# the tcp endpoint, attacked by another OS user (nobody, when the tests run as root) -------------------
FLOOD = """
import os, socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
refused = 0
for _ in range(count):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        try:
            connection.sendall(os.urandom(32))  # a nonce
            connection.recv(64)  # the agent's proof and nonce
            connection.sendall(os.urandom(32))  # a made-up proof
            refused += connection.recv(1) == b""
        except OSError:
            refused += 1
print(refused, flush=True)
"""


def as_attacker(code: str, *args: str) -> str:
    """Run code as another OS user (nobody) when the tests run as root, else as this one; its stdout."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    other = {"user": 65534, "group": 65534, "extra_groups": []} if os.getuid() == 0 else {}
    done = subprocess.run(
        [python, "-I", "-S", "-c", code, *args], capture_output=True, text=True, timeout=120, check=True, **other
    )  # type: ignore[call-overload]  # fmt: skip
    return done.stdout


@pytest.fixture
def tcp_server(tmp_path: Path) -> Iterator[HandoffServer]:
    running = HandoffServer(settings_for(tmp_path / "data"), lambda: None, "tcp")
    running.start()
    yield running
    running.close()


def tcp_environ(data_dir: str) -> dict[str, str]:
    return {**environ_of(data_dir), "TCX_BRIDGE_HANDOFF_ENDPOINT": "tcp", "TCX_BRIDGE_HANDOFF_TIMEOUT": "5"}


def test_a_flood_of_connections_without_the_secret_does_not_flood_the_log(
    tcp_server: HandoffServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Another local user made 1400 connections a second with made-up proofs: one warning each, 200 kB of
    log a second (17 GB a day) for as long as it liked. Now the first REFUSALS_LOGGED lines, then a count."""
    caplog.set_level(logging.INFO, logger="consumers.agent.handoff")
    port = tcp_server._listener.getsockname()[1]  # type: ignore[union-attr]  # what `ss -tln` shows anyone
    count = 300
    assert as_attacker(FLOOD, str(port), str(count)).strip() == str(count)  # every one refused
    assert tcp_server.handed == 0
    wait_until(lambda: sum("refused" in r.getMessage() for r in caplog.records) >= REFUSALS_LOGGED, 10)
    time.sleep(0.3)  # the last of the flood's threads
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == REFUSALS_LOGGED, lines[:3]
    assert launcher.hand_launch(LAUNCH, tcp_environ(tcp_server.settings.data_dir), tcp_server.directory) == 0
    tcp_server.close()  # tells the count
    told = [r.getMessage() for r in caplog.records if "more connection(s)" in r.getMessage()]
    assert told == [
        f"desk fast path: refused {count - REFUSALS_LOGGED} more connection(s), not logged one by one "
        f"(over {REFUSALS_LOGGED} in {REFUSAL_WINDOW:.0f} s)"
    ]


PLANT = """
import os, sys
base, target = sys.argv[1], sys.argv[2]
data = os.path.join(base, "data")
os.mkdir(data)
os.chmod(data, 0o777)  # a data_dir others may write: the victim set it there
os.symlink(target, os.path.join(data, "agent"))
print("planted", flush=True)
"""


@pytest.mark.parametrize("endpoint", ["tcp", "unix"])
def test_a_symlink_planted_as_the_agent_directory_is_not_followed(endpoint: str) -> None:
    """Another user who may write the data dir plants ``agent`` -> a directory of the agent's user (a web
    root, a shared project): the agent made it 0700 and put its secret (or socket) there."""
    with tempfile.TemporaryDirectory() as base:
        os.chmod(base, 0o777)
        victims = Path(base, "site")
        victims.mkdir(mode=0o755)
        os.chmod(victims, 0o755)
        assert as_attacker(PLANT, base, str(victims)).strip() == "planted"
        running = HandoffServer(settings_for(Path(base, "data")), lambda: None, endpoint)
        with pytest.raises(OSError, match=r"Not a directory|symbolic link"):
            running.start()  # the agent says "desk fast path off"; launches publish themselves
        assert stat.S_IMODE(victims.stat().st_mode) == 0o755
        assert list(victims.iterdir()) == []


HAND_LAUNCH = """
import sys, time
from bridge import launcher
started = time.monotonic()
environ = {"TCX_BRIDGE_DATA_DIR": sys.argv[1], "TCX_BRIDGE_HANDOFF_ENDPOINT": "tcp"}  # 25 ms
status = launcher.hand_launch(["/N:S", "/I:42"], environ, sys.argv[2])
print(status, round(time.monotonic() - started, 3), flush=True)
"""


def test_a_fifo_planted_as_the_endpoint_file_does_not_hang_the_launch(tmp_path: Path) -> None:
    """A process of the user (not the agent) makes handoff.tcp a FIFO: every launch blocked in open()
    for good, its call never published, instead of publishing itself."""
    directory = Path(handoff.directory_of(tmp_path / "data"))
    directory.mkdir(mode=0o700, parents=True)
    os.mkfifo(directory / "handoff.tcp", 0o600)
    done = subprocess.run(
        [sys.executable, "-c", HAND_LAUNCH, str(tmp_path / "data"), str(directory)],
        capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    status, took = done.stdout.split()
    assert status == "None"  # bridge.notify publishes it
    assert float(took) < 1.0
    closing = threading.Thread(target=loopback.remove_endpoint, args=(directory, os.urandom(32)), daemon=True)
    closing.start()  # the agent's clean stop reads the file too
    closing.join(5)
    assert not closing.is_alive()
    assert (directory / "handoff.tcp").exists()  # not this agent's: left


def test_a_frame_trickled_a_byte_at_a_time_holds_its_slot_no_longer_than_the_read_timeout(
    tcp_server: HandoffServer,
) -> None:
    """A process of the user (it may read handoff.tcp) proves the secret, then sends a byte every 0.3 s:
    each recv had its own READ_TIMEOUT, so it held the slot for good, and 16 such held every slot."""
    found = loopback.read_endpoint(tcp_server.directory)
    assert isinstance(found, tuple)
    port, secret = found
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        nonce = os.urandom(32)
        connection.sendall(nonce)
        answer = connection.recv(64)
        connection.sendall(loopback.launch_proof(secret, answer[32:], nonce))
        started = time.monotonic()
        heard = b""
        try:
            while time.monotonic() - started < READ_TIMEOUT + 4:
                connection.sendall(b"t")
                time.sleep(0.3)
        except OSError:  # the agent closed on it
            pass
        held = time.monotonic() - started
        with contextlib.suppress(OSError):
            heard = connection.recv(200)
    assert held < READ_TIMEOUT + 1, held
    assert heard.startswith(b"no ") or heard == b""
    assert tcp_server.handed == 0


@pytest.mark.parametrize("endpoint", ["unix", "tcp"])
def test_a_built_message_for_another_desk_or_broker_is_refused(tmp_path: Path, endpoint: str) -> None:
    """The agent compared a launch's settings with its own, but took any built message (bridge.notify's
    frame when the data_dir is in the TOML file): a notify with another desk or broker in its environment,
    or any process of the user, had the agent publish an event for desk d2 as d1's broker user."""
    from bridge.launch_event import prepare

    running = HandoffServer(settings_for(tmp_path / "data"), lambda: None, endpoint)
    running.start()
    try:
        mine = msgspec.structs.replace(running.settings, handoff_timeout=5.0, handoff_endpoint=endpoint)
        for other in (
            {"desk": "d2"},
            {"amqp_url": "amqp://guest:guest@elsewhere:5672/%2F"},
            {"exchange": "other.events"},
        ):
            theirs = msgspec.structs.replace(mine, **other)
            message = prepare(LAUNCH, theirs).message
            assert handoff.hand_over(message, theirs, endpoint) == (
                "no its settings send it elsewhere than this agent (broker, exchange, desk or outbox)"
            ), other
        unaddressed = handoff.encode(prepare(LAUNCH, mine).message, []).replace(b',"to":[]', b"")
        assert handoff.send(unaddressed, running.directory, 5.0, endpoint).startswith(b"no ")
        assert running.outbox.paths() == []
        assert handoff.hand_over(prepare(LAUNCH, mine).message, mine, endpoint) is None  # its own: taken
        assert len(running.outbox.paths()) == 1
    finally:
        running.close()
