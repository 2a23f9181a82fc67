"""The desk fast path: a launch hands its event to the desk agent already connected to the broker.

The agent (``tcx-bridge agent``) listens on a Unix socket ``handoff.sock`` (or
on 127.0.0.1: the endpoints, below) in ``<data_dir>/agent``, a directory only
its OS user may enter (0700, the socket 0600; both sides also check the
other's uid with SO_PEERCRED). A launch sends one frame and shuts its side;
the agent writes the event into the outbox (fsync'd file, fsync'd directory)
and only then answers ``ok``; it publishes the outbox on its open confirmed
connection right after. So once a launch has its ``ok`` the event is as safe
as an outboxed one, and the outbox rules hold unchanged: nothing is lost if
the agent dies at any step; an event the agent stored but did not answer for
in time is also published by the launch itself (a duplicate with the same
event_id, which consumers drop).

Two frames: a *launch* (:func:`encode_launch`: argv, the TCX_BRIDGE_ environment,
pid and start time), sent by the front (``bridge.launcher``) before anything
else is imported, from which the agent builds the event with notify's own code
and the launch's own settings; and a *built message* (:func:`encode`, the
outbox's JSON), sent by ``bridge.notify`` when the front did not find the agent
where the environment says (a data_dir set in the TOML file).

Two endpoints, chosen by ``handoff_endpoint`` (both sides read it; the front
from ``TCX_BRIDGE_HANDOFF_ENDPOINT``): ``unix``, the socket above, where Unix
sockets have SO_PEERCRED (Linux); ``tcp``, 127.0.0.1 on a random port with a
secret drawn at each agent start in ``handoff.tcp``, readable only by the user,
and a mutual HMAC proof on each connection before the frame (bridge.loopback);
``auto`` (the default) takes unix where it is supported, else tcp (Windows,
macOS). Not built: a Windows named pipe whose DACL grants only the user's SID
(its server checked with ``GetNamedPipeServerProcessId``), which would spare the
secret file.

No agent, a stale socket or endpoint file, a wrong owner, a refusal, a port
that cannot prove it is the agent, or no answer within ``handoff_timeout``
seconds: the launch takes its own path (connect, publish, confirm). Only the
standard library is imported here (msgspec only to encode a built message); no
pika, no phonenumbers.
"""

from __future__ import annotations

import _socket  # socket.py would bring enum and selectors: each costs a launch milliseconds
import os
import sys
import time

from bridge.ids import new_event_id as new_event_id  # the launch's own (bridge.launcher), without uuid

TYPE_CHECKING = False  # typing is not imported on the front's path (mypy reads this name as typing's)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from socket import socket

    from bridge.config import Settings
    from bridge.envelope import OutgoingMessage

DIRECTORY = "agent"  # in data_dir, mode 0700
SOCKET = "handoff.sock"  # in DIRECTORY, mode 0600
OK = b"ok"  # the answer's first word; a launch frame's answer goes on: " <exit status> <outcome line>"
LAUNCH = b"tcx-launch-1"  # a launch frame's first field
MAX_FRAME = 1 << 20  # bytes; an event is at most events.MAX_BODY, the frame adds its envelope
_SUN_PATH = 107  # bytes a Unix socket address holds on Linux (108 with the NUL)
ENDPOINTS = ("auto", "unix", "tcp")  # handoff_endpoint's values (bridge.keys, checked by bridge.values)


def destination(settings: Settings) -> list[str]:
    """Where a launch's settings send its event: broker, exchange, desk, outbox. The agent takes only
    events whose destination is its own (a launch's, from its settings; a built message's, sent along)."""
    return [settings.amqp_url, settings.exchange, settings.desk, str(settings.outbox_dir)]


def encode(message: OutgoingMessage, to: Sequence[str]) -> bytes:
    """The frame of one built message: the outbox's own fields (bridge.outbox.files.Entry) as JSON, and
    ``to``: the :func:`destination` of the settings that built it."""
    import msgspec  # loaded already where a message was built (bridge.notify)

    entry = {
        "routing_key": message.routing_key,
        "message_id": message.message_id,
        "type": message.type,
        "timestamp": message.timestamp,
        "app_id": message.app_id,
        "body": msgspec.Raw(message.body),
        "to": list(to),
    }
    return msgspec.json.encode(entry)


class Launch:
    """A launch handed over as it came (the front, bridge.launcher): the agent builds its event."""

    __slots__ = ("argv", "environ", "event_id", "pid", "started_ns")

    def __init__(
        self, argv: tuple[str, ...], environ: dict[str, str], pid: int, started_ns: int, event_id: str
    ) -> None:
        self.argv = argv
        self.environ = environ  # what settings are read from: TCX_BRIDGE_*, and where the platform dirs are
        self.pid = pid
        self.started_ns = started_ns  # time.time_ns() when the launch began: its event's occurred_at
        self.event_id = event_id  # chosen by the launch: the same event if it publishes itself after all


ENVIRON = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "HOME")  # besides TCX_BRIDGE_*: where the files are


def encode_launch(
    argv: Sequence[str], environ: Mapping[str, str], pid: int, started_ns: int, event_id: str
) -> bytes:
    """A launch frame: NUL-separated fields (POSIX argv and environment hold no NUL)."""
    chosen = [
        os.fsencode(f"{key}={value}")
        for key, value in environ.items()
        if key.startswith("TCX_BRIDGE_") or key in ENVIRON
    ]
    head = [LAUNCH, b"%d" % pid, b"%d" % started_ns, event_id.encode(), b"%d" % len(argv)]
    fields = [*head, *map(os.fsencode, argv), *chosen]
    return b"\0".join(fields)


def decode_launch(frame: bytes) -> Launch:
    """The launch a frame holds; ValueError when it is not one."""
    fields = frame.split(b"\0")
    if fields[0] != LAUNCH or len(fields) < 5:
        raise ValueError("not a launch frame")
    count = int(fields[4])
    argv, rest = fields[5 : 5 + count], fields[5 + count :]
    if len(argv) != count or any(b"=" not in pair for pair in rest):
        raise ValueError("a launch frame cut short")
    environ = dict(os.fsdecode(pair).split("=", 1) for pair in rest)
    event_id = fields[3].decode()
    started_ns = int(fields[2])
    if not is_event_id(event_id) or not 0 < started_ns < 1 << 63:  # a file name; a time datetime can hold
        raise ValueError("a launch frame with an event id or a start time no launch makes")
    return Launch(tuple(map(os.fsdecode, argv)), environ, int(fields[1]), started_ns, event_id)


def is_event_id(text: str) -> bool:
    """Whether text is an event id the wire takes (printable, bridge.events.MAX_EVENT_ID characters at
    most) that an outbox file's name can hold (no /)."""
    return 0 < len(text) <= 128 and text.isprintable() and "/" not in text


def supported() -> bool:
    """Whether this platform has the endpoint: Unix sockets with SO_PEERCRED (Linux; not Windows, nor macOS
    yet, whose getpeereid Python does not offer)."""
    return sys.platform != "win32" and all(
        hasattr(module, name)
        for module, name in ((_socket, "AF_UNIX"), (_socket, "SO_PEERCRED"), (os, "O_DIRECTORY"))
    )


def endpoint_of(choice: str) -> str:
    """The endpoint a handoff_endpoint setting means here: ``unix`` or ``tcp`` (auto: unix where
    :func:`supported`, else tcp); any other value as it is (no hand-off)."""
    choice = choice.strip().lower() or "auto"
    if choice == "auto":
        return "unix" if supported() else "tcp"
    return choice


def directory_of(data_dir: str | os.PathLike[str]) -> str:
    return os.path.join(data_dir, DIRECTORY)


def private(stat: os.stat_result) -> str | None:
    """Why a directory or socket is not this user's alone (another owner, group or other bits), or None."""
    if stat.st_uid != os.getuid():
        return f"owned by uid {stat.st_uid}, not {os.getuid()}"
    if stat.st_mode & 0o077:
        return f"mode {stat.st_mode & 0o777:o} lets others in"
    return None


def address(directory: str | os.PathLike[str], handle: int | None = None) -> str:
    """The socket's address; through ``/proc/self/fd/<handle>`` when its path is too long for one."""
    path = os.path.join(directory, SOCKET)
    if len(os.fsencode(path)) <= _SUN_PATH or handle is None:
        return path
    return f"/proc/self/fd/{handle}/{SOCKET}"


def peer_uid(connection: socket | _socket.socket) -> int:
    """The uid of the process at the other end (Linux SO_PEERCRED: pid, uid, gid as C ints)."""
    raw = connection.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(raw[4:8], sys.byteorder, signed=True)


def hand_over(message: OutgoingMessage, settings: Settings, endpoint: str = "auto") -> str | None:
    """Give a message built with settings to the running desk agent of their data_dir; None when it took
    it, else why not (one that would send it elsewhere refuses it).

    The whole exchange (connect, send, the agent's fsync and answer) gets handoff_timeout seconds.
    """
    timeout = settings.handoff_timeout
    if timeout <= 0:
        return "off"
    frame = encode(message, destination(settings))
    answer = send(frame, directory_of(settings.data_dir), timeout, endpoint)
    return None if answer == OK else answer.decode(errors="replace")


def send(frame: bytes, directory: str | os.PathLike[str], timeout: float, endpoint: str = "auto") -> bytes:
    """Send one frame to the agent at directory; its answer (``ok ...``), or why there is none.

    Every failure is an answer that does not begin with ``ok``: no agent (no directory,
    a stale socket or endpoint file), a directory, socket or file not this user's alone,
    an endpoint that cannot prove it is the agent, no answer in time.
    """
    chosen = endpoint_of(endpoint)
    if chosen == "tcp":
        from bridge import loopback  # only on this endpoint: a launch on the socket never loads it

        return loopback.send(frame, directory, timeout)
    if chosen != "unix":
        return f"no agent: no hand-off endpoint {endpoint!r} (use auto, unix or tcp)".encode()
    if not supported():
        return b"no agent: no Unix socket with a peer-uid check on this platform (use auto or tcp)"
    deadline = time.monotonic() + timeout
    try:
        handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return b"no agent"  # missing: no agent ever ran here
    try:
        unsafe = private(os.fstat(handle))
        if unsafe:
            return f"{directory} is not private ({unsafe})".encode()
        connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            connection.settimeout(timeout)
            try:
                connection.connect(address(directory, handle))
            except OSError as error:  # missing or stale socket: no agent running
                return f"no agent ({error.strerror or error})".encode()
            return _exchange(connection, frame, deadline)
        finally:
            connection.close()
    finally:
        os.close(handle)


def _exchange(connection: _socket.socket, frame: bytes, deadline: float) -> bytes:
    try:
        if peer_uid(connection) != os.getuid():
            return b"the hand-off socket is another user's"
        connection.sendall(frame)
        connection.shutdown(_socket.SHUT_WR)
    except OSError as error:
        return f"the hand-off failed ({error.strerror or error})".encode()
    return read_answer(connection, deadline)


def read_answer(connection: _socket.socket, deadline: float) -> bytes:
    """The agent's answer line, without its line break, or why there is none (by the deadline)."""
    try:
        answer = b""
        while not answer.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                return b"the agent did not answer in time"
            connection.settimeout(left)
            chunk = connection.recv(4096)
            if not chunk:
                return b"the agent closed without an answer: " + answer[:200]
            answer += chunk
    except TimeoutError:
        return b"the agent did not answer in time"
    except OSError as error:
        return f"the hand-off failed ({error.strerror or error})".encode()
    return answer.rstrip(b"\n")
