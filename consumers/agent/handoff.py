"""The agent's end of the desk fast path (bridge.handoff): take a launch's event, store it, answer.

One thread accepts (and serves each connection on a thread of its own, at most ``SLOTS`` at once: a
silent peer holds one for ``READ_TIMEOUT``, and a connection beyond them is closed, so that launch
publishes itself) on ``<data_dir>/agent/handoff.sock`` (directory 0700, socket 0600, the peer's uid
checked), or with the tcp endpoint on 127.0.0.1 at the port ``handoff.tcp`` names beside a secret
drawn at this start (bridge.loopback: a connection that fails the proofs is closed with one log
line, up to REFUSALS_LOGGED a minute, then a count; its frame never read), and, per connection:
reads one frame (a launch, whose event it builds with bridge.launch_event and the launch's own
settings, or a built message), writes the event into the outbox like a launch would (fsync'd),
answers ``ok``, then calls ``on_stored`` so the agent publishes the outbox on its open connection at
once, and writes the launch's log lines into its notify log. Whatever goes wrong before the answer,
the launch takes its own path; after it, the outbox holds the event until a replay's confirm removes
it. A launch whose settings send its event elsewhere than the agent would (another broker, exchange,
desk or outbox) is refused: it publishes itself."""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import msgspec

from bridge import handoff, loopback
from bridge.config import Settings, load_settings
from bridge.envelope import OutgoingMessage
from bridge.errors import ConfigError, OutboxError
from bridge.launch_event import Given, prepare
from bridge.notify_log import write_for
from bridge.outbox import Entry, Outbox
from bridge.text import printable

logger = logging.getLogger(__name__)

READ_TIMEOUT = 1.0  # seconds a launch may take to send its frame
SLOTS = 16  # connections served at once, each on its own thread; one more is closed (it publishes itself)
REFUSALS_LOGGED = 10  # refused connections logged one line each per REFUSAL_WINDOW; the rest are counted
REFUSAL_WINDOW = 60.0  # seconds
_ENTRY = msgspec.json.Decoder(Entry)


class _Addressed(msgspec.Struct):
    """A built message's destination (bridge.handoff.encode); none: not sent by this version's notify."""

    to: list[str] | None = None


_ADDRESSED = msgspec.json.Decoder(_Addressed)
ELSEWHERE = "its settings send it elsewhere than this agent (broker, exchange, desk or outbox)"


class Taken(NamedTuple):
    """A handed event to store, the answer once it is stored, and the launch's log lines to write then."""

    message: OutgoingMessage
    answer: bytes
    log: Callable[[], None] | None = None


def _decode_entry(frame: bytes, mine: list[str]) -> OutgoingMessage:
    """A built message's frame (the outbox's JSON, bridge.handoff.encode) sent to the destination mine."""
    entry = _ENTRY.decode(frame)
    if _ADDRESSED.decode(frame).to != mine:  # as for a launch (a desk, a broker in its environment)
        raise ValueError(ELSEWHERE)
    if not handoff.is_event_id(entry.message_id):  # the outbox file's name holds it
        raise ValueError(f"a built message's id {printable(entry.message_id, 60)!r} is no event id")
    return entry.message()


class RefusalLog:
    """One line per refused connection, up to REFUSALS_LOGGED per REFUSAL_WINDOW; beyond them a count, told
    with the next refusal after the window (or at close): another local user's flood of connections
    without the secret (thousands a second) would otherwise fill the agent's log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window_ends = 0.0
        self._logged = 0
        self._unlogged = 0

    def refused(self, peer: str, why: str) -> None:
        with self._lock:
            now = time.monotonic()
            unlogged = 0
            if now >= self._window_ends:
                self._window_ends, self._logged = now + REFUSAL_WINDOW, 0
                unlogged, self._unlogged = self._unlogged, 0
            if self._logged >= REFUSALS_LOGGED:
                self._unlogged += 1
                return
            self._logged += 1
        if unlogged:
            self._tell(unlogged)
        logger.warning("desk fast path: refused a connection from %s: %s", peer, why)

    def close(self) -> None:
        with self._lock:
            unlogged, self._unlogged = self._unlogged, 0
        if unlogged:
            self._tell(unlogged)

    @staticmethod
    def _tell(unlogged: int) -> None:
        logger.warning(
            "desk fast path: refused %d more connection(s), not logged one by one (over %d in %.0f s)",
            unlogged,
            REFUSALS_LOGGED,
            REFUSAL_WINDOW,
        )


class HandoffServer:
    """Listens for launches handing over their events; start() and close()."""

    def __init__(self, settings: Settings, on_stored: Callable[[], None], endpoint: str = "unix") -> None:
        self.settings = settings
        self.endpoint = endpoint  # unix or tcp (bridge.handoff.endpoint_of)
        self.directory = Path(handoff.directory_of(settings.data_dir))
        self.outbox = Outbox(settings.outbox_dir)
        self.on_stored = on_stored
        self.handed = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._secret: bytes | None = None  # the tcp endpoint's, drawn at start()
        self._slots = threading.BoundedSemaphore(SLOTS)
        self._warn_after = 0.0  # when _accept_failed may log again
        self._refusals = RefusalLog()

    @property
    def path(self) -> Path:
        """The socket, or the tcp endpoint's file."""
        return self.directory / (handoff.SOCKET if self.endpoint == "unix" else loopback.FILE)

    def start(self) -> None:
        """Create the private directory and the endpoint, and accept in a thread; OSError if it cannot."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.name == "posix":  # on Windows the profile's ACL keeps the directory the user's
            # never through a symlink: one planted where the directory should be (a data_dir others may
            # write) had the agent make a directory of the attacker's choosing 0700 and hold the secret
            handle = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                os.fchmod(handle, 0o700)  # an older or hand-made one too
                unsafe = handoff.private(os.fstat(handle))
            finally:
                os.close(handle)
            if unsafe:
                raise OSError(f"{self.directory} is not private ({unsafe})")
        listener = self._listen_unix() if self.endpoint == "unix" else self._listen_tcp()
        listener.settimeout(0.2)  # to see close() in time
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="handoff", daemon=True)
        self._thread.start()
        where = self.path if self.endpoint == "unix" else f"{loopback.HOST}:{listener.getsockname()[1]}"
        logger.info("desk fast path: launches hand their events over at %s", where)

    def _listen_unix(self) -> socket.socket:
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
        return listener

    def _listen_tcp(self) -> socket.socket:
        """127.0.0.1 on a port the system picks, then the file with it and a new secret."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # Windows: no other process may bind it too
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
            listener.bind((loopback.HOST, 0))
            listener.listen(64)
            self._secret = loopback.write_endpoint(self.directory, listener.getsockname()[1])
        except OSError:
            listener.close()
            raise
        return listener

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._listener is not None:
            self._listener.close()
            if self._secret is not None:
                loopback.remove_endpoint(self.directory, self._secret)
            else:
                with contextlib.suppress(OSError):
                    self.path.unlink()
        self._refusals.close()

    def _serve(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as error:
                if self._stop.is_set() or error.errno in (errno.EBADF, errno.EINVAL):  # closed: stop
                    if not self._stop.is_set():
                        logger.warning("desk fast path stopped: %s", error)
                    return
                self._accept_failed(error)  # out of descriptors or memory for now: launches publish
                continue
            if not self._slots.acquire(blocking=False):  # all busy: this launch takes its own path now
                connection.close()
                continue
            try:
                threading.Thread(target=self._serve_one, args=(connection,), daemon=True).start()
            except RuntimeError as error:  # no thread to be had: this launch publishes itself
                self._slots.release()
                connection.close()
                self._accept_failed(error)

    def _accept_failed(self, error: Exception) -> None:
        """A failure of the moment (EMFILE, ENOBUFS, no thread): logged once a minute, tried again soon."""
        now = time.monotonic()
        if now >= self._warn_after:
            self._warn_after = now + 60.0
            logger.warning("desk fast path: cannot take a connection now (%s); trying again", error)
        self._stop.wait(0.1)

    def _serve_one(self, connection: socket.socket) -> None:
        """One connection, on a thread of its own: a slow or silent peer holds one slot, not the others."""
        try:
            with connection:
                connection.settimeout(READ_TIMEOUT)
                if self._admitted(connection):
                    self._take(connection)
        except Exception:  # one launch's frame never ends the fast path for the others
            logger.exception("desk fast path: a launch's frame not taken (it takes its own path)")
        finally:
            self._slots.release()

    def _admitted(self, connection: socket.socket) -> bool:
        """Whether the peer may send a frame: this OS user (unix), or it proved it knows the secret (tcp)."""
        if self._secret is None:
            if handoff.peer_uid(connection) != os.getuid():
                self._refuse(connection, "another user")  # unreachable through the 0700 directory
                return False
            return True
        try:
            peer = connection.getpeername()
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            why = loopback.admit(connection, self._secret, READ_TIMEOUT)
        except OSError as error:
            why = f"the connection failed ({error.strerror or error})"
            peer = ("?", 0)
        if why is not None:
            self._refusals.refused(f"{peer[0]}:{peer[1]}", why)
            return False
        connection.settimeout(READ_TIMEOUT)  # for the frame, as on the socket
        return True

    def _take(self, connection: socket.socket) -> None:
        """One launch: its event into the outbox, then the answer; a refusal makes it take its own path."""
        try:
            frame = self._read(connection)
            if frame.startswith(handoff.LAUNCH):
                taken = self._launch(handoff.decode_launch(frame))
            else:
                taken = Taken(_decode_entry(frame, handoff.destination(self.settings)), handoff.OK)
            self._store(taken.message)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, OutboxError, OSError) as error:
            logger.warning("desk fast path: a launch's event not taken: %s", error)
            self._refuse(connection, str(error))
            return
        self.handed += 1
        try:
            self._answer(connection, taken.answer)
        except OSError as error:  # the launch gave up: it publishes too (a duplicate at most)
            logger.info(
                "desk fast path: event_id=%s stored, the launch left: %s", taken.message.message_id, error
            )
        if taken.log is not None:  # the launch's outcome line is in its log before the publish
            taken.log()
        self.on_stored()

    def _launch(self, launch: handoff.Launch) -> Taken:
        """The event of a launch as its own notify would build it; ValueError when it must publish itself."""
        try:
            settings = load_settings(environ=launch.environ, sections=()).settings  # as notify reads them
        except ConfigError as error:  # notify keeps it in the outbox and says what to fix
            raise ValueError(f"its settings: {error}") from None
        if handoff.destination(settings) != handoff.destination(self.settings):
            raise ValueError(ELSEWHERE)
        if settings.handoff_timeout <= 0:
            raise ValueError("its handoff_timeout is 0")
        started = launch.started_ns / 1e9
        prepared = prepare(launch.argv, settings, Given(launch.event_id, launch.started_ns))
        if prepared.oversize:
            raise ValueError(prepared.oversize)  # notify logs it LOST, as it would have
        event = prepared.event
        line = (
            f"handed {prepared.message.routing_key} event_id={event.event_id} "
            f"call_id={printable(str(event.call_id), 200)} ms={(time.time() - started) * 1000:.1f} replayed=0"
        )
        answer = b"%s %d %s" % (handoff.OK, prepared.exit_code, line.encode(errors="replace"))
        problem = logging.ERROR if event.kind == "invalid" else logging.WARNING
        lines = [
            (problem, f"launch {printable(repr(list(launch.argv)), 300)}: {printable(text, 1000)}")
            for text in prepared.problems
        ]
        lines.append((logging.INFO, line))
        return Taken(prepared.message, answer, functools.partial(write_for, settings, launch.pid, lines))

    @staticmethod
    def _read(connection: socket.socket) -> bytes:
        """The frame, within READ_TIMEOUT in all: a peer that trickles a byte now and then held its slot
        for as long as it liked (a timeout for each recv), all SLOTS of them with 16 connections."""
        deadline = time.monotonic() + READ_TIMEOUT
        chunks: list[bytes] = []
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OSError(f"no whole frame within {READ_TIMEOUT:g} s")
            connection.settimeout(left)
            chunk = connection.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > handoff.MAX_FRAME:
                raise OSError(f"a frame over {handoff.MAX_FRAME} bytes")

    def _store(self, message: OutgoingMessage) -> None:
        """Durable before the answer: the outbox's fsync'd file."""
        self.outbox.put(message)

    @staticmethod
    def _answer(connection: socket.socket, answer: bytes) -> None:
        connection.sendall(answer + b"\n")

    @staticmethod
    def _refuse(connection: socket.socket, reason: str) -> None:
        with contextlib.suppress(OSError):
            connection.sendall(b"no " + reason[:200].encode(errors="replace") + b"\n")
