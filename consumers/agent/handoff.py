"""The agent's end of the desk fast path (bridge.handoff): take a launch's event, store it, answer.

One thread accepts on ``<data_dir>/agent/handoff.sock`` (directory 0700, socket
0600, the peer's uid checked) and, per connection: reads one frame, writes the
event into the outbox like a launch would (fsync'd), answers ``ok``, then calls
``on_stored`` so the agent publishes the outbox on its open connection at once.
Whatever goes wrong before the answer, the launch takes its own path; after
it, the outbox holds the event until a replay's confirm removes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec

from bridge import handoff
from bridge.envelope import OutgoingMessage
from bridge.errors import OutboxError
from bridge.outbox import Outbox

logger = logging.getLogger(__name__)

READ_TIMEOUT = 1.0  # seconds a launch may take to send its frame


class HandoffServer:
    """Listens for launches handing over their events; start() and close()."""

    def __init__(self, data_dir: str, outbox_dir: Path, on_stored: Callable[[], None]) -> None:
        self.directory = handoff.directory_of(data_dir)
        self.outbox = Outbox(outbox_dir)
        self.on_stored = on_stored
        self.handed = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def path(self) -> Path:
        return self.directory / handoff.SOCKET

    def start(self) -> None:
        """Create the private directory and the socket, and accept in a thread; OSError if it cannot."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)  # an older or hand-made one too
        unsafe = handoff.private(os.stat(self.directory))
        if unsafe:
            raise OSError(f"{self.directory} is not private ({unsafe})")
        handle = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            where = handoff.address(self.directory, handle)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(where)  # a stale socket of an agent that was killed
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(where)
            os.chmod(where, 0o600)
        finally:
            os.close(handle)
        listener.listen(64)
        listener.settimeout(0.2)  # to see close() in time
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="handoff", daemon=True)
        self._thread.start()
        logger.info("desk fast path: launches hand their events over at %s", self.path)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _serve(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as error:
                if not self._stop.is_set():
                    logger.warning("desk fast path stopped: %s", error)
                return
            with connection:
                self._take(connection)

    def _take(self, connection: socket.socket) -> None:
        """One launch: its frame into the outbox, then the answer; a refusal makes it take its own path."""
        try:
            connection.settimeout(READ_TIMEOUT)
            if handoff.peer_uid(connection) != os.getuid():
                self._refuse(connection, "another user")  # unreachable through the 0700 directory
                return
            message = handoff.decode(self._read(connection))
            self._store(message)
        except (msgspec.DecodeError, msgspec.ValidationError, OutboxError, OSError) as error:
            logger.warning("desk fast path: a launch's event not taken: %s", error)
            self._refuse(connection, str(error))
            return
        self.handed += 1
        try:
            self._answer(connection)
        except OSError as error:  # the launch gave up: it publishes too (a duplicate at most)
            logger.info("desk fast path: event_id=%s stored, the launch left: %s", message.message_id, error)
        self.on_stored()

    @staticmethod
    def _read(connection: socket.socket) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := connection.recv(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > handoff.MAX_FRAME:
                raise OSError(f"a frame over {handoff.MAX_FRAME} bytes")
        return b"".join(chunks)

    def _store(self, message: OutgoingMessage) -> None:
        """Durable before the answer: the outbox's fsync'd file."""
        self.outbox.put(message)

    @staticmethod
    def _answer(connection: socket.socket) -> None:
        connection.sendall(handoff.OK)

    @staticmethod
    def _refuse(connection: socket.socket, reason: str) -> None:
        with contextlib.suppress(OSError):
            connection.sendall(b"no " + reason[:200].encode(errors="replace") + b"\n")
