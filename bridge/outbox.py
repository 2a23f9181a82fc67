"""The durable local outbox: events the broker did not confirm wait here.

One file per event in ``<data_dir>/outbox``, named ``<time_ns>-<event_id>.json``
so that name order is age order. A file appears atomically (written to a hidden
temporary file, fsync'd, renamed, directory fsync'd), so a crash or power cut
never leaves half an event. Replay holds an exclusive lock on ``.lock`` (released
by the OS if the process dies), so concurrent launches and ``spool flush`` never
publish the same file twice; a file is deleted only after its publish was
confirmed. The contract is at-least-once: a crash between confirm and delete
replays that one event again, with the same event_id. A temporary file left by
a launch killed between its fsync and its rename (an orphan, older than
``ORPHAN_AGE``) is recovered into the outbox by the next replay when it holds a
complete event, and removed when it does not.

An event the broker refuses for good (see ``transport.refused_for_good``: a
missing right on the exchange or the routing key, an exchange that cannot be
declared, a message it will never take) is moved to ``refused/`` with its reason
in a ``<name>.reason`` file beside it, and replay goes on with the events behind
it. Nothing leaves ``refused/`` without a command: ``retry`` moves events back
(under their old names, so in their old place), ``drop`` deletes one.
Transient failures (unreachable, nacked, no confirm in time) stop the replay and
keep every event where it is, in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import msgspec

from bridge.errors import OutboxError, TransportError
from bridge.transport import OutgoingMessage, refused_for_good

logger = logging.getLogger(__name__)

_SUFFIX = ".json"
_LOCK = ".lock"
_TEMPORARY = ".tmp-"
_REASON = ".reason"
REFUSED = "refused"  # the subdirectory of events the broker refused for good
ORPHAN_AGE = 60.0  # seconds; writing a file takes milliseconds, so an older temporary file is an orphan


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """An outboxed message as stored on disk; body is the original JSON."""

    routing_key: str
    message_id: str
    type: str
    timestamp: int
    app_id: str
    body: msgspec.Raw


_ENTRY_DECODER = msgspec.json.Decoder(Entry)
_ENCODER = msgspec.json.Encoder()


class Replay(NamedTuple):
    """What one replay did."""

    published: int
    remaining: int
    locked_out: bool = False
    refused: int = 0  # events this replay moved to refused/


class Refused(NamedTuple):
    """An event the broker refused for good, waiting in refused/ for a command."""

    path: Path
    reason: str
    refused_at: float  # seconds since the epoch

    @property
    def event_id(self) -> str:
        """The event's id, from its file name ``<time_ns>-<event_id>.json``."""
        return self.path.name.removesuffix(_SUFFIX).partition("-")[2]


BatchPublisher = Callable[[list[OutgoingMessage]], tuple[int, Exception | None]]
WINDOW = 500  # messages published before waiting for their confirms


def _one_at_a_time(publish: Callable[[OutgoingMessage], None]) -> BatchPublisher:
    def publish_batch(messages: list[OutgoingMessage]) -> tuple[int, Exception | None]:
        for done, message in enumerate(messages):
            try:
                publish(message)
            except Exception as error:  # noqa: BLE001  # handed back to replay, which raises it
                return done, error
        return len(messages), None

    return publish_batch


def _attempt(publish_batch: BatchPublisher, messages: list[OutgoingMessage]) -> tuple[int, Exception | None]:
    """publish_batch, with a TransportError it raises (a declare refused) handed back like one it returns."""
    try:
        return publish_batch(messages)
    except TransportError as error:
        return 0, error


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


class Outbox:
    """A directory of events waiting for the broker."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def put(self, message: OutgoingMessage) -> Path:
        """Store message durably; return its file."""
        entry = Entry(
            routing_key=message.routing_key,
            message_id=message.message_id,
            type=message.type,
            timestamp=message.timestamp,
            app_id=message.app_id,
            body=msgspec.Raw(message.body),
        )
        final = self.directory / f"{time.time_ns():020d}-{message.message_id}{_SUFFIX}"
        temporary = self.directory / f"{_TEMPORARY}{uuid.uuid4().hex}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as handle:
                handle.write(_ENCODER.encode(entry))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
            _fsync_directory(self.directory)
        except OSError as error:
            with contextlib.suppress(OSError):  # the directory may be what is broken
                temporary.unlink(missing_ok=True)
            raise OutboxError(f"cannot write to the outbox {str(self.directory)!r}: {error}") from None
        return final

    def paths(self) -> list[Path]:
        """Outboxed files, oldest first."""
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(self.directory)
                if entry.name.endswith(_SUFFIX) and not entry.name.startswith(".")
            )
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [self.directory / name for name in names]

    def orphans(self) -> list[Path]:
        """Temporary files: an event being written right now, or one a killed launch left behind."""
        try:
            return sorted(
                self.directory / entry.name
                for entry in os.scandir(self.directory)
                if entry.name.startswith(_TEMPORARY)
            )
        except (FileNotFoundError, NotADirectoryError):
            return []

    def recover_orphans(self, min_age: float = ORPHAN_AGE) -> int:
        """Move complete orphans into the outbox (by their age), remove incomplete ones; return moved."""
        recovered = 0
        for path in self.orphans():
            try:
                stat = path.stat()
                if time.time() - stat.st_mtime < min_age:
                    continue  # a launch may be writing it right now
                entry = _ENTRY_DECODER.decode(path.read_bytes())
            except FileNotFoundError:
                continue
            except (msgspec.DecodeError, msgspec.ValidationError):
                logger.warning("removed %s: an incomplete event left by a killed launch", path)
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            except OSError as error:
                raise OutboxError(f"cannot read the orphan {str(path)!r}: {error}") from None
            final = self.directory / f"{stat.st_mtime_ns:020d}-{entry.message_id}{_SUFFIX}"
            try:
                os.replace(path, final)
            except OSError as error:
                raise OutboxError(f"cannot recover the orphan {str(path)!r}: {error}") from None
            logger.warning("recovered event_id=%s from %s, left by a killed launch", entry.message_id, path)
            recovered += 1
        return recovered

    def load(self, path: Path) -> OutgoingMessage:
        """Read one outboxed file back into the message it was."""
        try:
            entry = _ENTRY_DECODER.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError) as error:
            raise OutboxError(f"outbox file {str(path)!r} cannot be read: {error}") from None
        return OutgoingMessage(
            routing_key=entry.routing_key,
            body=bytes(entry.body),
            message_id=entry.message_id,
            type=entry.type,
            timestamp=entry.timestamp,
            app_id=entry.app_id,
        )

    def replay(
        self,
        publish: Callable[[OutgoingMessage], None] | None = None,
        *,
        publish_batch: BatchPublisher | None = None,
        limit: int | None = None,
        wait: float = 0.0,
        window: int = WINDOW,
    ) -> Replay:
        """Publish outboxed messages oldest first, deleting each after its confirm.

        publish_batch(messages) publishes a window of messages at once and returns
        how many of them, from the first, the broker confirmed, and the error that
        stopped it (or None); publish sends one message at a time. An event the
        broker refuses for good goes to refused/ and replay goes on; any other
        failure stops it (its error propagates) to keep the order. If another process
        is replaying, waits up to ``wait`` seconds for it, then gives up with
        ``locked_out``.
        """
        if publish_batch is None:
            assert publish is not None, "give publish or publish_batch"
            publish_batch, window = _one_at_a_time(publish), 1
        if not self.paths() and not self.orphans():
            return Replay(0, 0)
        published = refused = 0
        with self._lock(wait) as acquired:
            if not acquired:
                return Replay(0, len(self.paths()), locked_out=True)
            self.recover_orphans()
            pending = deque(self.paths()[:limit])
            while pending:
                loaded: list[tuple[Path, OutgoingMessage]] = []
                while pending and len(loaded) < window:
                    path = pending.popleft()
                    try:
                        loaded.append((path, self.load(path)))
                    except OutboxError as unreadable:
                        self._quarantine(path, unreadable)
                if not loaded:
                    continue
                confirmed, stopped = _attempt(publish_batch, [message for _, message in loaded])
                self._remove(path for path, _ in loaded[:confirmed])
                published += confirmed
                if stopped is None or confirmed >= len(loaded):
                    if confirmed < len(loaded):
                        break
                    continue
                if not refused_for_good(stopped):
                    raise stopped
                # One of the unconfirmed was refused: the first of them, alone, says which.
                (path, message), rest = loaded[confirmed], loaded[confirmed + 1 :]
                if rest:
                    alone, error = _attempt(publish_batch, [message])
                else:  # it was the only one left unconfirmed: the refusal was its
                    alone, error = 0, stopped
                if alone:
                    self._remove([path])
                    published += 1
                elif error is not None and refused_for_good(error):
                    self.set_aside(path, error)
                    refused += 1
                elif error is not None:
                    raise error
                else:
                    break
                pending.extendleft(path for path, _ in reversed(rest))
            return Replay(published, len(self.paths()), refused=refused)

    def _remove(self, paths: Iterable[Path]) -> None:
        for path in paths:
            try:
                path.unlink(missing_ok=True)
            except OSError as failure:  # published but still here: it would be replayed again
                raise OutboxError(f"cannot remove {str(path)!r} after its confirm: {failure}") from None

    @property
    def refused_dir(self) -> Path:
        return self.directory / REFUSED

    def set_aside(self, path: Path, error: Exception) -> Path:
        """Move an event the broker refused for good to refused/, its reason beside it."""
        refused = self.refused_dir
        reason = " ".join(str(error).split())  # one line
        target = refused / path.name
        try:
            refused.mkdir(exist_ok=True)
            sidecar = refused / f"{path.name}{_REASON}"
            temporary = refused / f"{_TEMPORARY}{uuid.uuid4().hex}"
            temporary.write_text(reason + "\n", encoding="utf-8")
            os.replace(temporary, sidecar)  # the reason first: an event in refused/ always has one
            os.replace(path, target)
            _fsync_directory(refused)
        except OSError as moved:
            raise OutboxError(f"cannot move {str(path)!r} to {str(refused)!r}: {moved}") from None
        logger.error(
            "%s refused for good (%s); set aside in %s: `tcx-bridge spool list` shows it",
            path.name,
            reason,
            refused,
        )
        return target

    def refused(self) -> list[Refused]:
        """Events the broker refused for good, oldest first, with their reasons."""
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(self.refused_dir)
                if entry.name.endswith(_SUFFIX) and not entry.name.startswith(".")
            )
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for name in names:
            path = self.refused_dir / name
            sidecar = self.refused_dir / f"{name}{_REASON}"
            try:
                reason, when = sidecar.read_text(encoding="utf-8").strip(), sidecar.stat().st_mtime
            except OSError:
                reason, when = "(no reason recorded)", _mtime(path)
            found.append(Refused(path, reason, when))
        return found

    def find_refused(self, wanted: str) -> Refused:
        """The refused event named by its event id (or a unique start of it), or its file name."""
        every = self.refused()
        exact = [r for r in every if wanted in (r.path.name, r.path.stem, r.event_id)]
        matches = exact or [r for r in every if wanted and r.event_id.startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise OutboxError(
                f"no refused event {wanted!r} in {str(self.refused_dir)!r}; "
                "`tcx-bridge spool list` shows their ids"
            )
        raise OutboxError(f"{wanted!r} names {len(matches)} refused events; give more of the event id")

    def retry(self, wanted: Sequence[str] | None = None, *, wait: float = 10.0) -> list[Path]:
        """Move refused events (the named ones; all with None) back into the outbox for replay."""
        with self._lock(wait) as acquired:
            if not acquired:
                raise OutboxError("another process is replaying the outbox; try again in a moment")
            chosen = self.refused() if wanted is None else [self.find_refused(one) for one in wanted]
            moved = []
            for refused in chosen:
                target = self.directory / refused.path.name  # the old name: its old place in the order
                try:
                    os.replace(refused.path, target)
                    (self.refused_dir / f"{refused.path.name}{_REASON}").unlink(missing_ok=True)
                except OSError as error:
                    raise OutboxError(f"cannot move {str(refused.path)!r} back: {error}") from None
                moved.append(target)
            return moved

    def drop(self, wanted: Sequence[str], *, wait: float = 10.0) -> list[Refused]:
        """Delete the named refused events and their reasons for good (none if one name is unknown)."""
        with self._lock(wait) as acquired:
            if not acquired:
                raise OutboxError("another process is replaying the outbox; try again in a moment")
            chosen = list({refused.path: refused for refused in map(self.find_refused, wanted)}.values())
            for refused in chosen:
                try:
                    refused.path.unlink()
                    (self.refused_dir / f"{refused.path.name}{_REASON}").unlink(missing_ok=True)
                except OSError as error:
                    raise OutboxError(f"cannot delete {str(refused.path)!r}: {error}") from None
            return chosen

    def _quarantine(self, path: Path, error: OutboxError) -> None:
        """Move an unreadable file aside so it cannot block the ones behind it."""
        logger.error("%s; moved to %s", error, self.directory / "corrupt")
        corrupt = self.directory / "corrupt"
        try:
            corrupt.mkdir(exist_ok=True)
            os.replace(path, corrupt / path.name)
        except OSError as moved:
            raise OutboxError(f"cannot move {str(path)!r} aside: {moved}") from None

    @contextmanager
    def _lock(self, wait: float) -> Iterator[bool]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise OutboxError(f"cannot lock the outbox {str(self.directory)!r}: {error}") from None
        deadline = time.monotonic() + wait
        try:
            while not _try_lock(descriptor):
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.05)
            try:
                yield True
            finally:
                _unlock(descriptor)
        finally:
            os.close(descriptor)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows desks only
    import msvcrt

    def _try_lock(descriptor: int) -> bool:
        try:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(descriptor: int) -> None:
        os.lseek(descriptor, 0, os.SEEK_SET)
        msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)

    def _fsync_directory(directory: Path) -> None:
        """Windows cannot open a directory for fsync; NTFS journals the rename."""

else:
    import fcntl

    def _try_lock(descriptor: int) -> bool:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def _unlock(descriptor: int) -> None:
        fcntl.flock(descriptor, fcntl.LOCK_UN)

    def _fsync_directory(directory: Path) -> None:
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
