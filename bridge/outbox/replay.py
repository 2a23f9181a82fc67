"""Replay: publish the outboxed events oldest first, a window at a time, recording each window as sent.

A window's confirmed files are named in ``.sent`` at once and removed on a thread
(``bridge.outbox.sent``); a window of fewer than ``JOURNAL_MIN`` is removed at once.

An event the broker refuses for good is set aside (``refused/``) and replay goes
on; any other failure stops it and keeps every event where it is, in order.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from bridge.envelope import OutgoingMessage
from bridge.errors import OutboxError, TransportError
from bridge.outbox.refused import RefusedFiles
from bridge.outbox.sent import JOURNAL_MIN, Cleanup, SentFiles
from bridge.transport import refused_for_good

BatchPublisher = Callable[[list[OutgoingMessage]], tuple[int, Exception | None]]
WINDOW = 500  # messages published before waiting for their confirms
AHEAD_MIN = 16  # windows this big: the next one is read on a thread while this one waits for confirms


class Replay(NamedTuple):
    """What one replay did."""

    published: int
    remaining: int
    locked_out: bool = False
    refused: int = 0  # events this replay moved to refused/


class Replaying(RefusedFiles, SentFiles):
    """The outbox's files, refused/, the sent journal, and the replay that empties them."""

    def replay(
        self,
        publish: Callable[[OutgoingMessage], None] | None = None,
        *,
        publish_batch: BatchPublisher | None = None,
        limit: int | None = None,
        wait: float = 0.0,
        window: int = WINDOW,
    ) -> Replay:
        """Publish outboxed messages oldest first, each window recorded as sent after its confirms.

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
        self.join_cleanup()  # the removals the last replay here left running; raises what stopped them
        if not self.pending_names() and not self.orphans() and not self.has_sent():
            return Replay(0, 0)
        cleanup = Cleanup(self)
        try:
            with self._lock(wait) as acquired:
                if not acquired:
                    return Replay(0, len(self.pending_names()), locked_out=True)
                self.clear_sent()  # what an earlier replay published and did not remove: never again
                self.recover_orphans()
                pending = deque(self.pending_names()[:limit])
                published, refused = self._windows(publish_batch, pending, window, cleanup)
                remaining = len(self.pending_names())
        finally:
            self.leave_running(cleanup)  # the lock released: its thread empties .sent when it is done
        return Replay(published, remaining, refused=refused)

    def _windows(
        self, publish_batch: BatchPublisher, pending: deque[str], window: int, cleanup: Cleanup
    ) -> tuple[int, int]:
        """Publish pending a window at a time, the next one read meanwhile; return (published, refused)."""
        published = refused = 0
        queued: deque[_Window] = deque()  # windows read (or being read) off pending, in order
        try:
            while pending or queued:
                loaded = queued.popleft().loaded() if queued else self._load(_take(pending, window))
                if pending and not queued and window >= AHEAD_MIN:
                    queued.append(_Window.read(self._load, _take(pending, window)))
                if not loaded:
                    continue
                confirmed, stopped = _attempt(publish_batch, [message for _, message in loaded])
                self._done([name for name, _ in loaded[:confirmed]], cleanup)
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
                queued.appendleft(_Window(loaded[confirmed + 1 :]))  # before the one read meanwhile
        finally:
            for left in queued:
                left.wait()  # no thread reads (or moves a file aside) once the lock is released
        return published, refused

    def _done(self, names: list[str], cleanup: Cleanup) -> None:
        """Confirmed: a window is recorded in .sent and removed by cleanup's thread; a few are removed now."""
        if len(names) < JOURNAL_MIN:
            self._remove(names)
            return
        self.record_sent(names)
        cleanup.add(names)

    def _load(self, names: list[str]) -> list[tuple[str, OutgoingMessage]]:
        """The named events read back; an unreadable one goes to corrupt/."""
        directory = os.fspath(self.directory)
        loaded: list[tuple[str, OutgoingMessage]] = []
        for name in names:
            try:
                loaded.append((name, self.load(os.path.join(directory, name))))
            except OutboxError as unreadable:
                self._quarantine(self.directory / name, unreadable)
        return loaded

    def _settle(
        self,
        publish_batch: BatchPublisher,
        unconfirmed: list[tuple[str, OutgoingMessage]],
        stopped: Exception,
    ) -> tuple[int, int] | None:
        """Publish the first unconfirmed event alone: (1, 0) it went, (0, 1) set aside, None stop.

        When it is the only one left, the refusal that stopped the window was its own.
        Raises the error of a failure that is not for good.
        """
        (name, message), rest = unconfirmed[0], unconfirmed[1:]
        if rest:
            alone, error = _attempt(publish_batch, [message])
        else:  # it was the only one left unconfirmed: the refusal was its
            alone, error = 0, stopped
        if alone:
            self._remove([name])
            return 1, 0
        if error is not None and refused_for_good(error):
            self.set_aside(self.directory / name, error)
            return 0, 1
        if error is not None:
            raise error
        return None


class _Window:
    """A window of events read back: at once, or on a thread while the window before waits for confirms."""

    def __init__(self, loaded: list[tuple[str, OutgoingMessage]] | None = None) -> None:
        self._loaded = loaded or []
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @classmethod
    def read(
        cls, load: Callable[[list[str]], list[tuple[str, OutgoingMessage]]], names: list[str]
    ) -> _Window:
        window = cls()
        window._thread = threading.Thread(
            target=window._run, args=(load, names), name="outbox-read", daemon=True
        )
        window._thread.start()
        return window

    def _run(self, load: Callable[[list[str]], list[tuple[str, OutgoingMessage]]], names: list[str]) -> None:
        try:
            self._loaded = load(names)
        except BaseException as error:  # noqa: BLE001  # raised by loaded(), in the replaying thread
            self._error = error

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def loaded(self) -> list[tuple[str, OutgoingMessage]]:
        self.wait()
        if self._error is not None:
            raise self._error
        return self._loaded


def _take(pending: deque[str], count: int) -> list[str]:
    return [pending.popleft() for _ in range(min(count, len(pending)))]


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
