"""The desk fast path on its second endpoint, 127.0.0.1 with a secret drawn at each agent start (bridge.loopback).

Selected on Linux with handoff_endpoint = tcp, as on Windows and macOS by default.
The attacks run as the attacker would: a local process that connects to the port
without the secret, or squats the port of a dead agent named by a stale handoff.tcp.
"""

from __future__ import annotations

import errno
import hmac
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from bridge import handoff, launcher, loopback
from bridge.config import load_settings
from bridge.errors import ConfigError
from consumers.agent.handoff import READ_TIMEOUT, SLOTS, HandoffServer
from tests.conftest import free_port, wait_until
from tests.test_handoff import fast_path_imports, settings_for

LAUNCH = ["/N:S", "/C:0791234567", "/T:I", "/I:42"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HandoffServer]:
    running = HandoffServer(settings_for(tmp_path / "data"), lambda: None, "tcp")
    running.start()
    yield running
    running.close()


def environ_of(data_dir: str, timeout: str = "5") -> dict[str, str]:
    """A launch's environment on the tcp endpoint (a loaded test machine: not a desk's 25 ms)."""
    return {
        "TCX_BRIDGE_DATA_DIR": data_dir,
        "TCX_BRIDGE_CONFIG": os.devnull,
        "TCX_BRIDGE_DESK": "d1",
        "TCX_BRIDGE_HANDOFF_TIMEOUT": timeout,
        "TCX_BRIDGE_HANDOFF_ENDPOINT": "tcp",
    }


def endpoint_of(server: HandoffServer) -> tuple[int, bytes]:
    found = loopback.read_endpoint(server.directory)
    assert isinstance(found, tuple), found
    return found


class FakeAgent:
    """A process of the same user squatting 127.0.0.1:port after the agent died: it records every byte a
    launch sends and answers what it was given (a replayed answer of the real agent, or garbage)."""

    def __init__(self, port: int, answer: bytes) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the dead agent's TIME_WAIT
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(8)
        self.answer = answer
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(3)
            got = b""
            try:
                got = connection.recv(65536)  # the launch's first words
                connection.sendall(self.answer)
                connection.sendall(b"ok 0 handed, trust me\n")
                while chunk := connection.recv(65536):
                    got += chunk
            except OSError:
                pass
            self.received.append(got)

    def close(self) -> list[bytes]:
        self.thread.join(10)
        self.listener.close()
        return self.received


def test_the_launchs_hmac_is_hmac_sha256() -> None:
    for size in (0, 1, 32, 63, 64, 65, 200):  # keys shorter than, as long as, longer than a block
        key, message = os.urandom(size), os.urandom(3 * size + 1)
        assert loopback.mac(key, message) == hmac.digest(key, message, "sha256")


def test_endpoint_file_is_private_and_holds_a_new_secret_at_each_start(tmp_path: Path) -> None:
    secrets = []
    for _ in range(2):
        running = HandoffServer(settings_for(tmp_path / "data"), lambda: None, "tcp")
        running.start()
        try:
            assert stat.S_IMODE(os.stat(running.directory).st_mode) == 0o700
            assert stat.S_IMODE(os.stat(running.path).st_mode) == 0o600
            assert os.stat(running.path).st_uid == os.getuid()
            port, secret = endpoint_of(running)
            assert len(secret) == 32
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass  # it listens where the file says
            assert [p.name for p in running.directory.iterdir()] == [loopback.FILE]  # no temp file left
            secrets.append(secret)
        finally:
            running.close()
        assert not running.path.exists(), "removed at a clean stop"
    assert secrets[0] != secrets[1]


def test_a_launch_is_handed_over_tcp(server: HandoffServer) -> None:
    environ = environ_of(server.settings.data_dir)
    assert launcher.hand_launch(LAUNCH, environ, server.directory) == 0
    assert server.handed == 1
    message = server.outbox.load(server.outbox.paths()[0])
    assert message.routing_key == "call.started.inbound.d1"


def test_a_built_message_is_handed_over_tcp(server: HandoffServer) -> None:
    """bridge.notify's hand-off (a data_dir or endpoint the front did not try) on this endpoint."""
    from bridge.launch_event import prepare

    message = prepare(LAUNCH, server.settings).message
    assert (
        handoff.hand_over(message, msgspec.structs.replace(server.settings, handoff_timeout=5.0), "tcp")
        is None
    )
    assert server.outbox.load(server.outbox.paths()[0]).message_id == message.message_id


def attack(port: int, first: bytes, then: bytes = b"") -> bytes:
    """A local process without the secret: it sends first, reads the agent's words, sends then (a proof
    it made up and a frame), shuts its side; everything the agent said."""
    heard = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        try:
            connection.sendall(first)
            if then:
                heard = connection.recv(64)
                connection.sendall(then)
            connection.shutdown(socket.SHUT_WR)
            while chunk := connection.recv(65536):
                heard += chunk
        except OSError:  # the agent closed on it (reset, broken pipe): refused
            pass
    return heard


def test_a_client_without_the_secret_gets_nothing_stored(
    server: HandoffServer, caplog: pytest.LogCaptureFixture
) -> None:
    port, secret = endpoint_of(server)
    environ = environ_of(server.settings.data_dir)
    frame = handoff.encode_launch(LAUNCH, environ, 1, time.time_ns(), handoff.new_event_id())
    wrong = os.urandom(32)
    caplog.set_level(logging.INFO, logger="consumers.agent.handoff")
    heard = [
        attack(port, frame),  # no secret at all: the frame as on the Unix socket
        attack(port, os.urandom(32), loopback.mac(wrong, b"launch\0") + frame),  # a wrong secret
        attack(port, os.urandom(32), os.urandom(32) + frame),  # a made-up proof
        attack(port, b""),  # nothing
    ]
    assert [len(words) for words in heard] == [64, 64, 64, 0]  # the agent's proof and nonce at most
    assert server.handed == 0
    assert server.outbox.paths() == []
    refused = [r.getMessage() for r in caplog.records if "refused a connection" in r.getMessage()]
    assert len(refused) == 4, refused  # one line each
    assert "a wrong proof" in refused[1]
    text = caplog.text
    assert secret.hex() not in text
    assert secret.hex()[:16] not in text
    assert launcher.hand_launch(LAUNCH, environ, server.directory) == 0  # the server thread goes on
    assert server.handed == 1


def test_a_client_that_says_nothing_does_not_hold_the_others_up(server: HandoffServer) -> None:
    """Each connection has a thread of its own: a silent one holds only its own slot."""
    port, _ = endpoint_of(server)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        started = time.monotonic()
        environ = environ_of(server.settings.data_dir, str(READ_TIMEOUT + 3))
        assert launcher.hand_launch(LAUNCH, environ, server.directory) == 0
        assert time.monotonic() - started < READ_TIMEOUT / 2


def test_with_every_slot_held_a_launch_publishes_itself_at_once_then_is_handed_again(
    server: HandoffServer,
) -> None:
    """SLOTS silent connections (another local user): the next launch is closed at once and takes its
    own path; once they are gone (the read timeout), launches are handed over again."""
    port, _ = endpoint_of(server)
    silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(SLOTS)]
    try:
        time.sleep(0.2)  # every one of them accepted and in its slot
        environ = environ_of(server.settings.data_dir, "2")
        started = time.monotonic()
        assert launcher.hand_launch(LAUNCH, environ, server.directory) is None
        assert time.monotonic() - started < 1.0  # closed, not left waiting for the 2 s
        assert server.handed == 0
    finally:
        for connection in silent:
            connection.close()
    deadline = time.monotonic() + READ_TIMEOUT + 3
    while launcher.hand_launch(LAUNCH, environ, server.directory) is None:
        assert time.monotonic() < deadline, "the slots never came back"
        time.sleep(0.1)
    assert server.handed == 1


def test_the_agents_answer_to_one_nonce_proves_nothing_for_another(server: HandoffServer) -> None:
    """The attacker asks the live agent for its proof of a nonce, waits for the agent to die and squats its
    port with that answer ready: the next launch sees a proof for another nonce and sends nothing."""
    port, _ = endpoint_of(server)
    stale = server.path.read_bytes()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(os.urandom(32))
        recorded = connection.recv(64)
    assert len(recorded) == 64
    server.close()
    server.path.write_bytes(stale)  # a killed agent leaves its file
    os.chmod(server.path, 0o600)
    fake = FakeAgent(port, recorded)
    environ = environ_of(server.settings.data_dir, "2")
    answer = handoff.send(b"tcx-launch-1 secret stuff", server.directory, 2.0, "tcp")
    assert answer == b"the hand-off port did not prove it is the agent (a stale handoff.tcp?)"
    received = fake.close()
    assert [len(got) for got in received] == [32]  # the launch's nonce, and nothing after it
    fake = FakeAgent(port, os.urandom(64))  # garbage
    started = time.monotonic()
    assert launcher.hand_launch(LAUNCH, environ, server.directory) is None  # it takes its own path
    assert time.monotonic() - started < 1.0
    received = fake.close()
    assert [len(got) for got in received] == [32]
    assert b"0791234567" not in received[0]
    assert server.handed == 0


def test_a_stale_file_without_a_listener_means_no_agent_at_once(tmp_path: Path) -> None:
    directory = tmp_path / "agent"
    directory.mkdir(mode=0o700)
    loopback.write_endpoint(directory, free_port())  # a killed agent's file; nobody listens there
    started = time.monotonic()
    answer = handoff.send(b"x", directory, 5.0, "tcp")
    assert time.monotonic() - started < 0.5
    assert answer.startswith(b"no agent"), answer
    assert launcher.hand_launch(LAUNCH, environ_of(str(tmp_path)), directory) is None


def test_no_file_means_no_agent(tmp_path: Path) -> None:
    assert handoff.send(b"x", tmp_path / "agent", 1.0, "tcp") == b"no agent"
    (tmp_path / "agent").mkdir(mode=0o700)
    assert handoff.send(b"x", tmp_path / "agent", 1.0, "tcp") == b"no agent"


@pytest.mark.parametrize(
    ("where", "mode", "expected"),
    [
        ("file", 0o644, b"is not private (mode 644 lets others in)"),
        ("file", 0o660, b"is not private (mode 660 lets others in)"),
        ("directory", 0o755, b"is not private (mode 755 lets others in)"),
    ],
)
def test_the_launch_refuses_a_file_others_may_read(
    server: HandoffServer, where: str, mode: int, expected: bytes
) -> None:
    target = server.path if where == "file" else server.directory
    os.chmod(target, mode)
    try:
        answer = handoff.send(b"x", server.directory, 2.0, "tcp")
        handed = launcher.hand_launch(LAUNCH, environ_of(server.settings.data_dir), server.directory)
    finally:
        os.chmod(target, 0o600 if where == "file" else 0o700)
    assert expected in answer, answer
    assert handed is None
    assert server.handed == 0


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the file to another user (nobody)")
def test_the_launch_refuses_a_file_of_another_owner(server: HandoffServer) -> None:
    os.chown(server.path, 65534, 65534)
    answer = handoff.send(b"x", server.directory, 2.0, "tcp")
    assert f"is not private (owned by uid 65534, not {os.getuid()})".encode() in answer, answer
    assert server.handed == 0


def test_the_launch_does_not_follow_a_symlinked_file(server: HandoffServer, tmp_path: Path) -> None:
    elsewhere = tmp_path / "planted"
    elsewhere.write_bytes(server.path.read_bytes())
    os.chmod(elsewhere, 0o600)
    server.path.unlink()
    server.path.symlink_to(elsewhere)
    assert handoff.send(b"x", server.directory, 2.0, "tcp") == b"no agent"
    assert server.handed == 0


@pytest.mark.parametrize(
    "content",
    [b"", b"tcx-handoff-tcp-1 80\n", b"tcx-handoff-tcp-1 0 " + b"00" * 32, b"other 80 " + b"00" * 32],
)
def test_a_file_that_is_no_endpoint_is_refused(tmp_path: Path, content: bytes) -> None:
    directory = tmp_path / "agent"
    directory.mkdir(mode=0o700)
    (directory / loopback.FILE).write_bytes(content)
    os.chmod(directory / loopback.FILE, 0o600)
    assert handoff.send(b"x", directory, 1.0, "tcp").endswith(b"is not an endpoint file")


def test_the_endpoint_setting() -> None:
    assert handoff.endpoint_of("auto") == ("unix" if handoff.supported() else "tcp")
    assert handoff.endpoint_of(" TCP ") == "tcp"
    assert launcher.endpoint_of({}) == "auto"
    assert launcher.endpoint_of({"TCX_BRIDGE_HANDOFF_ENDPOINT": "tcp"}) == "tcp"
    assert handoff.send(b"x", "/nonexistent", 1.0, "pipe").startswith(b"no agent: no hand-off endpoint")
    environ = {"TCX_BRIDGE_CONFIG": os.devnull}
    assert load_settings(environ=environ).settings.handoff_endpoint == "auto"
    environ["TCX_BRIDGE_HANDOFF_ENDPOINT"] = "TCP"
    assert load_settings(environ=environ).settings.handoff_endpoint == "tcp"
    environ["TCX_BRIDGE_HANDOFF_ENDPOINT"] = "pipe"
    with pytest.raises(ConfigError) as error:
        load_settings(environ=environ)
    assert (
        str(error.value)
        == "TCX_BRIDGE_HANDOFF_ENDPOINT: 'pipe' is not a hand-off endpoint; use auto, unix or tcp"
    )


def test_the_tcp_fast_path_imports_no_hmac_no_openssl(server: HandoffServer) -> None:
    """The launch as the Assistant runs it, in a fresh process, handed over tcp: what it imported."""
    imported, timed = fast_path_imports(environ_of(server.settings.data_dir))
    for module in ("hmac", "hashlib", "_hashlib", "pika", "msgspec", "bridge.notify", "typing", "enum"):
        assert module not in imported, module
        assert module not in timed, module
    assert "bridge.loopback" in imported
    wait_until(lambda: server.handed == 1)


class _OutOfDescriptors:
    """The listener, as accept() behaves when the process has no descriptor left, a few times."""

    def __init__(self, listener: socket.socket, failures: int) -> None:
        self.listener = listener
        self.failures = failures

    def accept(self) -> tuple[socket.socket, object]:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self.listener.accept()

    def __getattr__(self, name: str) -> object:
        return getattr(self.listener, name)


def test_the_fast_path_outlives_a_moment_without_descriptors(
    server: HandoffServer, caplog: pytest.LogCaptureFixture
) -> None:
    """accept() failing with EMFILE (a flood of connections, a leak elsewhere) stops nothing: once it
    passes, launches are handed over again; one warning, not one per failure."""
    assert server._listener is not None
    server._listener = _OutOfDescriptors(server._listener, failures=5)  # type: ignore[assignment]
    environ = environ_of(server.settings.data_dir)
    with caplog.at_level(logging.WARNING, logger="consumers.agent.handoff"):
        deadline = time.monotonic() + 10
        while launcher.hand_launch(LAUNCH, environ, server.directory) is None:
            assert time.monotonic() < deadline, "the fast path never came back"
    assert server.handed == 1
    warned = [r.getMessage() for r in caplog.records if "cannot take a connection" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "Too many open files" in warned[0]
