"""The sent journal: a window's confirmed files recorded as done in one fsync'd append, removed later.

Unlinking a file that was fsync'd costs ~80 us on an ext4 disk, more than publishing
its event; so after a window's confirms, replay appends the files' names to
``.sent`` (one write, one fsync), and once it returns a thread of its own removes
them (replay does not wait for it; the next replay in the process, or
``join_cleanup``, does, and raises what stopped it). A file ``.sent`` names is
done: ``paths()`` does not list it. The next replay, under the lock, first removes
every file ``.sent`` names, syncs the directory, and only then empties ``.sent``,
so a sent file never becomes pending again, even when a process died before its
thread was done; the thread does the same when it is done and finds the lock free.

Each append begins with a newline, so a line torn by a crash (``files.sent_names``
ignores it: that one event is replayed again) never swallows a later name.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from bridge.errors import OutboxError
from bridge.outbox.files import SENT, OutboxFiles, fsync_directory, locked, sent_names

logger = logging.getLogger("bridge.outbox")

JOURNAL_MIN = 4  # confirmed at once: worth an fsync'd record (~0.2 ms); fewer are unlinked at once

REMOVERS = 4  # threads unlinking a replay's sent files (4 on ext4: ~63 us each, against ~82 us for one)
REMOVER_MIN = 64  # sent files that make a helper thread worth starting

_cleanups: dict[str, list[Cleanup]] = {}  # directory -> removals its replays in this process left running
_cleanups_lock = threading.Lock()


class SentFiles(OutboxFiles):
    """The outbox's files, with the journal of those already published."""

    @property
    def sent_journal(self) -> Path:
        return self.directory / SENT

    def record_sent(self, names: list[str]) -> None:
        """Record the named files as done (one append, one fsync): from here on no replay publishes them."""
        if any("\n" in name for name in names):  # a line each: such a name is removed at once instead
            self._remove([name for name in names if "\n" in name])
            names = [name for name in names if "\n" not in name]
        if not names:
            return
        record = _lines(names)
        try:
            descriptor = os.open(self.sent_journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, record)  # a local file: one write takes it all, or fails
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as error:  # a full disk, say: removing them at once frees it, or says why
            logger.warning(
                "cannot record %d sent event(s) in %s (%s); removing them now", len(names), SENT, error
            )
            self._remove(names)

    def has_sent(self) -> bool:
        """Whether ``.sent`` names anything (files a replay may not have removed yet)."""
        try:
            return os.stat(self.sent_journal).st_size > 0
        except OSError:
            return False

    def clear_sent(self) -> int:
        """Under the lock: remove the files ``.sent`` names, sync, then empty ``.sent``; return removed.

        A file that cannot be removed stays named (``.sent`` rewritten to name just those):
        done all the same, never published again; logged at each replay until it is gone.
        """
        names = sent_names(self.directory)
        if not names and not self.has_sent():
            return 0
        removed, kept = 0, []
        for name in sorted(names):
            try:
                os.unlink(self.directory / name)
                removed += 1
            except FileNotFoundError:
                continue
            except OSError as error:
                logger.error(
                    "cannot remove %s after its confirm (%s); it stays named in %s, never published again",
                    self.directory / name,
                    error,
                    SENT,
                )
                kept.append(name)
        try:
            fsync_directory(self.directory)  # the removals are durable before the journal forgets them
            if kept:
                _rewrite(self.directory, kept)
            else:
                descriptor = os.open(self.sent_journal, os.O_WRONLY | os.O_TRUNC)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise OutboxError(f"cannot empty {str(self.sent_journal)!r}: {error}") from None
        if removed:
            logger.info("removed %d file(s) an earlier replay published", removed)
        return removed

    def join_cleanup(self) -> None:
        """Wait for the removals replays of this directory left running in this process; raise their error."""
        with _cleanups_lock:
            running = _cleanups.pop(_key(self.directory), [])
        errors = []
        for cleanup in running:
            try:
                cleanup.join()
            except OutboxError as error:
                errors.append(error)
        if errors:
            raise errors[0]

    def leave_running(self, cleanup: Cleanup) -> None:
        """A replay returns: its removals start, and the next replay here (or join_cleanup) waits for them."""
        if cleanup.start():
            with _cleanups_lock:
                _cleanups.setdefault(_key(self.directory), []).append(cleanup)


class Cleanup:
    """The files one replay recorded as sent, removed on a thread of their own once it returns.

    The thread starts when the replay is done, not beside it: unlinking costs the
    kernel more than publishing does, and beside the replay it competed with the
    broker for the CPU (measured: a slower replay, and the files gone no sooner).
    When done, it empties ``.sent`` if the lock is free. join() raises what stopped it.
    """

    def __init__(self, outbox: SentFiles) -> None:
        self._outbox = outbox
        self._names: list[str] = []
        self._thread: threading.Thread | None = None
        self._error: OutboxError | None = None

    def add(self, names: list[str]) -> None:
        self._names.extend(names)

    def start(self) -> bool:
        """Start removing (not a daemon: a process that exits normally removes them first); False: none."""
        if not self._names or self._thread is not None:
            return False
        self._thread = threading.Thread(target=self._run, name="outbox-remove")
        self._thread.start()
        return True

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        try:
            self._remove_all()
            with locked(self._outbox.directory, 0.0) as acquired:
                if acquired:  # else another replay holds it, and empties .sent itself
                    self._outbox.clear_sent()
        except OutboxError as error:
            logger.error("%s; the file stays named in %s, and the next replay removes it", error, SENT)
            self._error = error

    def _remove_all(self) -> None:
        """Unlink on REMOVERS threads at once (an unlink mostly waits for the file system, not the CPU).

        A file that cannot be removed does not stop the others; the first such error is raised.
        """
        names = self._names
        share = max(1, -(-len(names) // REMOVERS) if len(names) >= 2 * REMOVER_MIN else len(names))
        errors: list[OutboxError] = []

        def remove(part: list[str]) -> None:
            for name in part:
                try:
                    self._outbox._remove((name,))
                except OutboxError as error:
                    errors.append(error)

        helpers = [
            threading.Thread(target=remove, args=(names[first : first + share],), name="outbox-remove")
            for first in range(share, len(names), share)
        ]
        for helper in helpers:
            helper.start()
        remove(names[:share])
        for helper in helpers:
            helper.join()
        if errors:
            raise errors[0]


def _rewrite(directory: Path, names: list[str]) -> None:
    """``.sent`` replaced by one naming just names (written aside, fsync'd, renamed, directory synced)."""
    aside = directory / f"{SENT}.new"  # not a .tmp- name: that is an orphaned event's
    with open(aside, "wb") as handle:
        handle.write(_lines(names))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(aside, directory / SENT)
    fsync_directory(directory)


def _lines(names: list[str]) -> bytes:
    """names as ``.sent`` records them: a line each, after a newline (a torn line never swallows one)."""
    return b"\n" + os.fsencode("\n".join(names)) + b"\n"


def _key(directory: Path) -> str:
    return os.path.abspath(directory)
