"""The desk fast path's endpoint and frames (bridge.handoff, bridge.launcher, the agent's HandoffServer)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import handoff, launcher
from bridge.config import Settings, load_settings
from bridge.keys import platform_dir
from bridge.launch_event import Given, prepare
from consumers.agent.handoff import HandoffServer
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent


def settings_for(data_dir: Path) -> Settings:
    environ = {"TCX_BRIDGE_DATA_DIR": str(data_dir), "TCX_BRIDGE_CONFIG": os.devnull, "TCX_BRIDGE_DESK": "d1"}
    return load_settings(environ=environ).settings


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HandoffServer]:
    stored: list[bool] = []
    running = HandoffServer(settings_for(tmp_path / "data"), lambda: stored.append(True))
    running.start()
    yield running
    running.close()


class HangingAgent:
    """A socket where the agent's would be that accepts and never answers (a hung agent)."""

    def __init__(self, directory: Path, answer: bytes | None = None) -> None:
        directory.mkdir(mode=0o700, parents=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(directory / handoff.SOCKET))
        self.listener.listen(8)
        self.answer = answer
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(connection)
            if self.answer is not None:
                while connection.recv(65536):
                    pass
                connection.sendall(self.answer)

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


def test_launch_frame_round_trip_keeps_bytes_that_are_not_utf8() -> None:
    argv = ["/N:S", "/C:" + os.fsdecode(b"\xff07"), "/T:I", "/I:42", ""]
    environ = {"TCX_BRIDGE_DESK": "d1", "HOME": "/home/x", "PATH": "/bin", "XDG_DATA_HOME": "/x=y"}
    launch = handoff.decode_launch(handoff.encode_launch(argv, environ, 77, 123, "e-1"))
    assert launch.argv == tuple(argv)
    assert launch.environ == {"TCX_BRIDGE_DESK": "d1", "HOME": "/home/x", "XDG_DATA_HOME": "/x=y"}
    assert (launch.pid, launch.started_ns, launch.event_id) == (77, 123, "e-1")


def test_the_fronts_event_ids_are_version_4_uuids() -> None:
    for _ in range(200):
        made = handoff.new_event_id()
        assert str(uuid.UUID(made)) == made
        assert uuid.UUID(made).version == 4
        assert uuid.UUID(made).variant == uuid.RFC_4122


def test_a_given_start_time_is_the_events_occurred_at() -> None:
    settings = settings_for(Path("/nonexistent"))
    started = 1_764_547_200_123_456_789  # 2025-12-01T00:00:00.123456789Z
    event = prepare(["/N:S", "/T:I", "/I:1"], settings, Given("e-2", started)).event
    assert (event.event_id, event.occurred_at) == ("e-2", "2025-12-01T00:00:00.123456Z")


@pytest.mark.parametrize(
    "frame", [b"", b"tcx-launch-1\x001\x002\x00e\x005\x00/N:S", b"tcx-launch-2\x001\x002\x00e\x000"]
)
def test_bad_launch_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(ValueError, match="launch frame"):
        handoff.decode_launch(frame)


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"XDG_DATA_HOME": "/srv/data"},
        {"XDG_DATA_HOME": "  "},  # blank: the default, as platform_dir takes it
        {"TCX_BRIDGE_DATA_DIR": "/srv/tcx"},
    ],
)
def test_the_front_finds_the_data_dir_where_the_settings_do(environ: dict[str, str]) -> None:
    settings = load_settings(environ={**environ, "TCX_BRIDGE_CONFIG": os.devnull}).settings
    assert Path(launcher.data_dir(environ)) == Path(settings.data_dir)
    if "TCX_BRIDGE_DATA_DIR" not in environ:
        assert Path(launcher.data_dir(environ)) == platform_dir("data", environ)


def test_endpoint_is_private(server: HandoffServer) -> None:
    assert stat.S_IMODE(os.stat(server.directory).st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(server.path).st_mode)
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    assert os.stat(server.path).st_uid == os.getuid()


def test_agent_takes_a_launch_and_stores_it_before_answering(server: HandoffServer, tmp_path: Path) -> None:
    settings = server.settings
    environ = {
        "TCX_BRIDGE_DATA_DIR": settings.data_dir,
        "TCX_BRIDGE_CONFIG": os.devnull,
        "TCX_BRIDGE_DESK": "d1",
        "TCX_BRIDGE_HANDOFF_TIMEOUT": "5",  # a loaded test machine, not a desk's 25 ms
    }
    status = launcher.hand_launch(["/N:S", "/C:0791234567", "/T:I", "/I:42"], environ, server.directory)
    assert status == 0
    stored = server.outbox.paths()
    assert len(stored) == 1
    message = server.outbox.load(stored[0])
    expected = prepare(["/N:S", "/C:0791234567", "/T:I", "/I:42"], settings).message
    assert message.routing_key == expected.routing_key == "call.started.inbound.d1"
    assert (message.type, message.app_id) == (expected.type, expected.app_id)
    log_file = Path(settings.data_dir) / "logs" / "notify.log"
    wait_until(log_file.exists)  # written after the answer
    wait_until(lambda: "handed" in log_file.read_text())
    log = log_file.read_text()
    assert f"INFO handed call.started.inbound.d1 event_id={message.message_id}" in log


def test_agent_refuses_a_launch_whose_settings_send_it_elsewhere(server: HandoffServer) -> None:
    settings = server.settings
    environ = {
        "TCX_BRIDGE_DATA_DIR": settings.data_dir,
        "TCX_BRIDGE_CONFIG": os.devnull,
        "TCX_BRIDGE_DESK": "d2",
    }
    assert launcher.hand_launch(["/N:S", "/T:I", "/I:42"], environ, server.directory) is None
    assert server.outbox.paths() == []


def test_invalid_launch_is_handed_with_status_2(server: HandoffServer) -> None:
    environ = {"TCX_BRIDGE_DATA_DIR": server.settings.data_dir, "TCX_BRIDGE_CONFIG": os.devnull}
    environ["TCX_BRIDGE_DESK"] = "d1"
    environ["TCX_BRIDGE_HANDOFF_TIMEOUT"] = "5"  # a loaded test machine, not a desk's 25 ms
    assert launcher.hand_launch(["/N:X"], environ, server.directory) == 2
    assert server.outbox.load(server.outbox.paths()[0]).routing_key == "call.invalid.d1"


def test_a_hung_agent_costs_the_timeout_then_the_launch_goes_its_own_way(tmp_path: Path) -> None:
    directory = tmp_path / "agent"
    hung = HangingAgent(directory)
    try:
        environ = {"TCX_BRIDGE_HANDOFF_TIMEOUT": "0.05"}
        assert launcher.hand_launch(["/N:S", "/T:I", "/I:1"], environ, directory) is None
        assert hung.held, "the launch did connect"
    finally:
        hung.close()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"ok 0 handed x\n", 0),
        (b"ok 2 handed y\n", 2),
        (b"no something\n", None),
        (b"ok\n", None),
        (b"", None),
    ],
)
def test_only_an_ok_with_a_status_ends_the_launch(
    tmp_path: Path, answer: bytes, expected: int | None
) -> None:
    directory = tmp_path / "agent"
    agent = HangingAgent(directory, answer)
    try:
        environ = {"TCX_BRIDGE_HANDOFF_TIMEOUT": "5"}  # the agent answers at once, or never (then we wait)
        assert launcher.hand_launch(["/N:S", "/T:I", "/I:1"], environ, directory) == expected
    finally:
        agent.close()


def test_no_agent_and_a_stale_socket_mean_no_hand_off(tmp_path: Path) -> None:
    directory = tmp_path / "agent"
    assert handoff.send(b"x", directory, 0.05).startswith(b"no agent")
    directory.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(directory / handoff.SOCKET))
    stale.close()  # the socket file of a killed agent
    assert handoff.send(b"x", directory, 0.05).startswith(b"no agent")


def test_the_launch_does_not_talk_to_a_directory_others_may_enter(server: HandoffServer) -> None:
    os.chmod(server.directory, 0o755)
    try:
        answer = handoff.send(b"x", server.directory, 0.5)
    finally:
        os.chmod(server.directory, 0o700)
    assert b"is not private (mode 755 lets others in)" in answer
    assert server.handed == 0


def test_a_data_dir_too_long_for_a_socket_address_still_works() -> None:
    with tempfile.TemporaryDirectory() as base:
        deep = Path(base, *["d" * 40] * 3)
        running = HandoffServer(settings_for(deep), lambda: None)
        running.start()
        try:
            assert len(str(running.path)) > 108
            environ = {
                "TCX_BRIDGE_DATA_DIR": str(deep),
                "TCX_BRIDGE_CONFIG": os.devnull,
                "TCX_BRIDGE_DESK": "d1",
                "TCX_BRIDGE_HANDOFF_TIMEOUT": "5",
            }
            assert launcher.hand_launch(["/N:E", "/T:I", "/I:7"], environ, running.directory) == 0
        finally:
            running.close()
        assert running.handed == 1


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a probe as another user (nobody)")
def test_another_os_user_cannot_reach_the_endpoint() -> None:
    """Run as nobody (uid 65534): the data dir is open to it, the agent's directory and socket are not."""
    with tempfile.TemporaryDirectory() as base:
        os.chmod(base, 0o755)
        data = Path(base) / "data"
        running = HandoffServer(settings_for(data), lambda: None)
        running.start()
        os.chmod(data, 0o755)
        probe = (
            "import socket, sys, os\n"
            "os.listdir(sys.argv[1])  # the data dir is readable to this user\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n"
            "    s.connect(sys.argv[2]); s.sendall(b'x'); print('connected')\n"
            "except PermissionError:\n"
            "    print('refused')\n"
        )
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable  # one nobody may run
        try:
            result = subprocess.run(
                [python, "-I", "-S", "-c", probe, str(data), str(running.path)],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
                user=65534,
                group=65534,
                extra_groups=[],
            )
        except PermissionError as error:
            pytest.skip(f"no Python here that another user may run: {error}")
        finally:
            running.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "refused"
    assert running.handed == 0


FAST_PATH_PROBE = """
import sys
before = set(sys.modules)  # the interpreter's own, and what site brought (an editable install's finder)
from bridge import launcher
sys.argv = ["tcx-bridge-notify", "/N:S", "/C:0791234567", "/T:I", "/I:42"]
try:
    launcher.main()
except SystemExit as done:
    print(done.code, " ".join(sorted(set(sys.modules) - before)), "|", " ".join(sorted(before)))
"""


def fast_path_imports(environ: dict[str, str]) -> tuple[set[str], set[str]]:
    """A launch (FAST_PATH_PROBE, exit status 0) in a fresh process with environ: the modules it added to
    sys.modules, and those ``python -X importtime`` timed, beyond what the interpreter had loaded first."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TCX_BRIDGE_")}
    env.update(environ)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", FAST_PATH_PROBE],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    status, modules = result.stdout.split(" ", 1)
    assert status == "0"
    added, before = modules.split("|")
    timed = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    return set(added.split()), timed - set(before.split())


def test_the_fast_path_imports_no_pika_no_phonenumbers_no_msgspec(tmp_path: Path) -> None:
    """The launch as the Assistant runs it, in a fresh process, handed to an agent: what it imported."""
    data = tmp_path / "data"
    agent = HangingAgent(data / handoff.DIRECTORY, b"ok 0 handed call.started.inbound.d1\n")
    try:
        imported, timed = fast_path_imports(
            {"TCX_BRIDGE_DATA_DIR": str(data), "TCX_BRIDGE_CONFIG": os.devnull}
        )
    finally:
        agent.close()
    for module in (  # nor what the launch does not need: the settings machinery, logging, typing
        "pika",
        "phonenumbers",
        "msgspec",
        "bridge.notify",
        "bridge.config",
        "logging",
        "typing",
        "pathlib",
        "enum",
        "bridge.loopback",  # the tcp endpoint's: not loaded on the socket's path
    ):
        assert module not in imported, module
        assert module not in timed, module
    assert "bridge.handoff" in imported


def test_notify_hands_a_built_message_over_without_pika(tmp_path: Path) -> None:
    """When the front did not try the agent (its data dir set in the TOML file), notify hands it over."""
    data = tmp_path / "data"
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "{data}"\ndesk = "d1"\n')
    agent = HangingAgent(data / handoff.DIRECTORY, b"ok\n")
    try:
        imported, _ = fast_path_imports(
            {"TCX_BRIDGE_CONFIG": str(config), "XDG_DATA_HOME": str(tmp_path / "elsewhere")}
        )
    finally:
        agent.close()
    assert "bridge.notify" in imported
    assert "pika" not in imported
    assert "phonenumbers" not in imported
    assert "handed call.started.inbound.d1" in (data / "logs" / "notify.log").read_text()
