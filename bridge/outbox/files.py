"""The outbox's files: write one event atomically, list them oldest first, read one back.

Also what keeps the directory healthy: orphans of a killed launch recovered or
removed, an unreadable file moved to ``corrupt/``, and the operating system's
parts: the lock replay holds (released by the OS if the process dies), fsync of
the directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from bridge.envelope import OutgoingMessage
from bridge.errors import OutboxError

logger = logging.getLogger("bridge.outbox")

SUFFIX = ".json"
TEMPORARY = ".tmp-"
ORPHAN_AGE = 60.0  # seconds; writing a file takes milliseconds, so an older temporary file is an orphan
SENT = ".sent"  # the journal of files whose events were confirmed, waiting to be removed (bridge.outbox.sent)


def event_names(directory: Path) -> list[str]:
    """The event files' names in directory, oldest first (their names begin with the time); [] if missing."""
    try:
        return sorted(
            entry.name
            for entry in os.scandir(directory)
            if entry.name.endswith(SUFFIX) and not entry.name.startswith(".")
        )
    except (FileNotFoundError, NotADirectoryError):
        return []


def sent_names(directory: Path) -> set[str]:
    """The files the journal ``.sent`` names as done: its complete lines that name an event file.

    A line without its newline (an append torn by a crash) names nothing, and neither
    does one that is not an event file's name (a crash may leave zeros): that event is
    replayed again, with its event id.
    """
    try:
        with open(directory / SENT, "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return set()
    except OSError as error:
        raise OutboxError(f"cannot read {str(directory / SENT)!r}: {error}") from None
    lines = data.split(b"\n")[:-1]  # what follows the last newline is torn
    return {name for line in lines if (name := os.fsdecode(line)) and is_event_name(name)}


def is_event_name(name: str) -> bool:
    """Whether name can be an event file's (``<time_ns>-<event_id>.json``, nothing else in the name)."""
    return (
        name.endswith(SUFFIX)
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and "\n" not in name
    )


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """An outboxed message as stored on disk; body is the original JSON."""

    routing_key: str
    message_id: str
    type: str
    timestamp: int
    app_id: str
    body: msgspec.Raw

    def message(self) -> OutgoingMessage:
        """The message it was (an outboxed file, or a built message handed to the desk agent)."""
        return OutgoingMessage(
            routing_key=self.routing_key,
            body=bytes(self.body),
            message_id=self.message_id,
            type=self.type,
            timestamp=self.timestamp,
            app_id=self.app_id,
        )


_ENTRY_DECODER = msgspec.json.Decoder(Entry)
_ENCODER = msgspec.json.Encoder()


def mtime(path: Path) -> float:
    """When path was last written, or now if it cannot be read."""
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


class OutboxFiles:
    """A directory of events waiting for the broker: one file each, named so that name order is age order."""

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
        final = self.directory / f"{time.time_ns():020d}-{message.message_id}{SUFFIX}"
        temporary = self.directory / f"{TEMPORARY}{os.urandom(16).hex()}"
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # events hold callers' numbers:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)  # the user's alone
            with open(os.open(temporary, flags, 0o600), "wb") as handle:
                handle.write(_ENCODER.encode(entry))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
            fsync_directory(self.directory)
        except OSError as error:
            with contextlib.suppress(OSError):  # the directory may be what is broken
                temporary.unlink(missing_ok=True)
            raise OutboxError(f"cannot write to the outbox {str(self.directory)!r}: {error}") from None
        return final

    def paths(self) -> list[Path]:
        """Outboxed files waiting to be published, oldest first (not those ``.sent`` names as done)."""
        directory = self.directory
        return [directory / name for name in self.pending_names()]

    def pending_names(self) -> list[str]:
        """The names of paths(): what replay works with (no Path made per event)."""
        names = event_names(self.directory)
        if names:
            done = sent_names(self.directory)
            names = [name for name in names if name not in done] if done else names
        return names

    def orphans(self) -> list[Path]:
        """Temporary files: an event being written right now, or one a killed launch left behind."""
        try:
            return sorted(
                self.directory / entry.name
                for entry in os.scandir(self.directory)
                if entry.name.startswith(TEMPORARY)
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
            final = self.directory / f"{stat.st_mtime_ns:020d}-{entry.message_id}{SUFFIX}"
            try:
                os.replace(path, final)
            except OSError as error:
                raise OutboxError(f"cannot recover the orphan {str(path)!r}: {error}") from None
            logger.warning("recovered event_id=%s from %s, left by a killed launch", entry.message_id, path)
            recovered += 1
        return recovered

    def load(self, path: Path | str) -> OutgoingMessage:
        """Read one outboxed file back into the message it was."""
        try:
            entry = _ENTRY_DECODER.decode(_read(path))
        except (OSError, msgspec.DecodeError) as error:
            raise OutboxError(f"outbox file {str(path)!r} cannot be read: {error}") from None
        return entry.message()

    def _remove(self, names: Iterable[str]) -> None:
        """Unlink the named files (one already gone is fine)."""
        directory = os.fspath(self.directory)
        for name in names:
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            except OSError as failure:  # published but still here: it would be replayed again
                path = os.path.join(directory, name)
                raise OutboxError(f"cannot remove {path!r} after its confirm: {failure}") from None

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
        with locked(self.directory, wait) as acquired:
            yield acquired


def _read(path: Path | str) -> bytes:
    """A small file's bytes, with fewer calls than Path.read_bytes (no buffered file object)."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        chunks = [os.read(descriptor, 1 << 16)]
        while chunks[-1]:
            chunks.append(os.read(descriptor, 1 << 16))
    finally:
        os.close(descriptor)
    return chunks[0] if len(chunks) == 2 else b"".join(chunks)


LOCK = ".lock"  # the file locked in the outbox directory


@contextmanager
def locked(directory: Path, wait: float) -> Iterator[bool]:
    """Hold the outbox's lock (True), or yield False when another process held it for wait seconds."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise OutboxError(f"cannot lock the outbox {str(directory)!r}: {error}") from None
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

    def fsync_directory(directory: Path) -> None:
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

    def fsync_directory(directory: Path) -> None:
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
