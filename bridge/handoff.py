"""The desk fast path: a launch hands its event to the desk agent already connected to the broker.

The agent (``tcx-bridge agent``) listens on a Unix socket ``handoff.sock`` in
``<data_dir>/agent``, a directory only its OS user may enter (0700, the socket
0600; both sides also check the other's uid with SO_PEERCRED). A launch sends
one frame, the event as the outbox stores it (:class:`Frame`), and shuts its
side; the agent writes it into the outbox (fsync'd file, fsync'd directory)
and only then answers ``ok``; it publishes the outbox on its open confirmed
connection right after. So once notify has its ``ok`` the event is as safe as
an outboxed one, and the outbox rules hold unchanged: nothing is lost if the
agent dies at any step; an event the agent stored but did not answer for in
time is also published by the launch itself (a duplicate with the same
event_id, which consumers drop).

No agent, a stale socket, a wrong owner, or no answer within
``handoff_timeout`` seconds: :func:`hand_over` returns None and the launch
takes its own path (connect, publish, confirm). Only the standard library and
msgspec are imported here (no pika, no phonenumbers).

Windows (not built yet): a named pipe ``\\\\.\\pipe\\tcx-bridge-<user SID>-<desk>``
whose DACL grants only the user's SID (``PIPE_REJECT_REMOTE_CLIENTS``, the
client checks the server's SID with ``GetNamedPipeServerProcessId``); where
pipes are not usable, 127.0.0.1 on a random port with a per-boot secret in a
file of the user's profile readable only by them, sent first on each
connection. Until then :func:`hand_over` returns None there.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
from pathlib import Path

import msgspec

from bridge.envelope import OutgoingMessage

DIRECTORY = "agent"  # in data_dir, mode 0700
SOCKET = "handoff.sock"  # in DIRECTORY, mode 0600
OK = b"ok\n"
MAX_FRAME = 1 << 20  # bytes; an event is at most events.MAX_BODY, the frame adds its envelope
_SUN_PATH = 107  # bytes a Unix socket address holds on Linux (108 with the NUL)


class Frame(msgspec.Struct, frozen=True, kw_only=True):
    """One handed event: the outbox's own fields (bridge.outbox.files.Entry), body as sent."""

    routing_key: str
    message_id: str
    type: str
    timestamp: int
    app_id: str
    body: msgspec.Raw


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Frame)


def encode(message: OutgoingMessage) -> bytes:
    """The frame of one message (what the outbox would store of it)."""
    return _ENCODER.encode(
        Frame(
            routing_key=message.routing_key,
            message_id=message.message_id,
            type=message.type,
            timestamp=message.timestamp,
            app_id=message.app_id,
            body=msgspec.Raw(message.body),
        )
    )


def decode(frame: bytes) -> OutgoingMessage:
    """The message a frame holds; msgspec.DecodeError or ValidationError when it is not one."""
    found = _DECODER.decode(frame)
    return OutgoingMessage(
        routing_key=found.routing_key,
        body=bytes(found.body),
        message_id=found.message_id,
        type=found.type,
        timestamp=found.timestamp,
        app_id=found.app_id,
    )


def directory_of(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / DIRECTORY


def private(stat: os.stat_result) -> str | None:
    """Why a directory or socket is not this user's alone (another owner, group or other bits), or None."""
    if stat.st_uid != os.getuid():
        return f"owned by uid {stat.st_uid}, not {os.getuid()}"
    if stat.st_mode & 0o077:
        return f"mode {stat.st_mode & 0o777:o} lets others in"
    return None


def address(directory: Path, handle: int | None = None) -> str:
    """The socket's address; through ``/proc/self/fd/<handle>`` when its path is too long for one."""
    path = str(directory / SOCKET)
    if len(os.fsencode(path)) <= _SUN_PATH or handle is None:
        return path
    return f"/proc/self/fd/{handle}/{SOCKET}"


def peer_uid(connection: socket.socket) -> int:
    """The uid of the process at the other end (Linux SO_PEERCRED)."""
    raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", raw)[1])


def hand_over(message: OutgoingMessage, data_dir: str, timeout: float) -> str | None:
    """Give message to the running desk agent; None when it took it, else why not (take today's path).

    The whole exchange (connect, send, the agent's fsync and answer) gets timeout seconds.
    """
    if timeout <= 0:
        return "off"
    if sys.platform == "win32" or not hasattr(socket, "AF_UNIX"):  # pragma: no cover - see the docstring
        return "no hand-off endpoint on this platform yet"
    deadline = time.monotonic() + timeout
    directory = directory_of(data_dir)
    try:
        handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return "no agent"  # missing: no agent ever ran here
    try:
        unsafe = private(os.fstat(handle))
        if unsafe:
            return f"{directory} is not private ({unsafe})"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            try:
                connection.connect(address(directory, handle))
            except OSError as error:  # missing or stale socket: no agent running
                return f"no agent ({error.strerror or error})"
            return _exchange(connection, encode(message), deadline)
    finally:
        os.close(handle)


def _exchange(connection: socket.socket, frame: bytes, deadline: float) -> str | None:
    try:
        if peer_uid(connection) != os.getuid():
            return "the hand-off socket is another user's"
        connection.sendall(frame)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while len(answer) < len(OK):
            left = deadline - time.monotonic()
            if left <= 0:
                return "the agent did not answer in time"
            connection.settimeout(left)
            chunk = connection.recv(64)
            if not chunk:
                break
            answer += chunk
    except TimeoutError:
        return "the agent did not answer in time"
    except OSError as error:
        return f"the hand-off failed ({error.strerror or error})"
    if answer == OK:
        return None
    return f"the agent refused it ({answer[:200].decode(errors='replace').strip() or 'no answer'})"
