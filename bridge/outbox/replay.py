"""Replay: publish the outboxed events oldest first, a window at a time, deleting each after its confirm.

An event the broker refuses for good is set aside (``refused/``) and replay goes
on; any other failure stops it and keeps every event where it is, in order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from bridge.envelope import OutgoingMessage
from bridge.errors import OutboxError, TransportError
from bridge.outbox.refused import RefusedFiles
from bridge.transport import refused_for_good

BatchPublisher = Callable[[list[OutgoingMessage]], tuple[int, Exception | None]]
WINDOW = 500  # messages published before waiting for their confirms


class Replay(NamedTuple):
    """What one replay did."""

    published: int
    remaining: int
    locked_out: bool = False
    refused: int = 0  # events this replay moved to refused/


class Replaying(RefusedFiles):
    """The outbox's files, refused/, and the replay that empties them."""

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
        with self._lock(wait) as acquired:
            if not acquired:
                return Replay(0, len(self.paths()), locked_out=True)
            self.recover_orphans()
            pending = deque(self.paths()[:limit])
            removing = _Removing(self._remove)
            try:
                published, refused = self._windows(publish_batch, pending, window, removing)
            finally:
                removing.wait()  # every confirmed file gone (or its error raised) before the lock goes
            return Replay(published, len(self.paths()), refused=refused)

    def _windows(
        self, publish_batch: BatchPublisher, pending: deque[Path], window: int, removing: _Removing
    ) -> tuple[int, int]:
        """Publish pending a window at a time; return (published, refused)."""
        published = refused = 0
        while pending:
            loaded = self._load_window(pending, window)
            if not loaded:
                continue
            confirmed, stopped = _attempt(publish_batch, [message for _, message in loaded])
            removing.start([path for path, _ in loaded[:confirmed]])  # while the next window goes out
            published += confirmed
            if stopped is None or confirmed >= len(loaded):
                if confirmed < len(loaded):
                    break
                continue
            if not refused_for_good(stopped):
                raise stopped
            # One of the unconfirmed was refused: the first of them, alone, says which.
            settled = self._settle(publish_batch, loaded[confirmed:], stopped)
            if settled is None:
                break
            published, refused = published + settled[0], refused + settled[1]
            pending.extendleft(path for path, _ in reversed(loaded[confirmed + 1 :]))
        return published, refused

    def _load_window(self, pending: deque[Path], window: int) -> list[tuple[Path, OutgoingMessage]]:
        """Take up to window readable events off pending; an unreadable one goes to corrupt/."""
        loaded: list[tuple[Path, OutgoingMessage]] = []
        while pending and len(loaded) < window:
            path = pending.popleft()
            try:
                loaded.append((path, self.load(path)))
            except OutboxError as unreadable:
                self._quarantine(path, unreadable)
        return loaded

    def _settle(
        self,
        publish_batch: BatchPublisher,
        unconfirmed: list[tuple[Path, OutgoingMessage]],
        stopped: Exception,
    ) -> tuple[int, int] | None:
        """Publish the first unconfirmed event alone: (1, 0) it went, (0, 1) set aside, None stop.

        When it is the only one left, the refusal that stopped the window was its own.
        Raises the error of a failure that is not for good.
        """
        (path, message), rest = unconfirmed[0], unconfirmed[1:]
        if rest:
            alone, error = _attempt(publish_batch, [message])
        else:  # it was the only one left unconfirmed: the refusal was its
            alone, error = 0, stopped
        if alone:
            self._remove([path])
            return 1, 0
        if error is not None and refused_for_good(error):
            self.set_aside(path, error)
            return 0, 1
        if error is not None:
            raise error
        return None


class _Removing:
    """Confirmed files deleted on a thread of their own while replay publishes the next window.

    Deleting is a third of a replay's time on an ext4 disk; the thread overlaps it with
    the broker's round trips. One window at a time: start() waits for the one before,
    and wait() raises what stopped it (a file left would be replayed again).
    """

    def __init__(self, remove: Callable[[Iterable[Path]], None]) -> None:
        self._remove = remove
        self._thread: threading.Thread | None = None
        self._error: OutboxError | None = None

    def start(self, paths: list[Path]) -> None:
        self.wait()
        if len(paths) < 8:  # a launch's few: not worth a thread
            self._remove(paths)
            return
        self._thread = threading.Thread(target=self._run, args=(paths,), name="outbox-remove", daemon=True)
        self._thread.start()

    def _run(self, paths: list[Path]) -> None:
        try:
            self._remove(paths)
        except OutboxError as error:
            self._error = error

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


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
