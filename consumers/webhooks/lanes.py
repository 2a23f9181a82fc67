"""A target's requests in flight: one lane per call, so a call's events go one after the other.

Lanes run on the worker's pool (``concurrency`` threads: never more requests in
flight) as soon as an event arrives, not batch by batch, so a slow request holds up
only its own call. What they finish waits in :meth:`Lanes.finished` for the
connection's thread, which publishes the retries and dead letters and acks (pika is
not thread-safe); ``wake`` tells that thread to look now. After a lost connection,
:meth:`Lanes.forget` drops everything: the broker redelivers what was not acked
(a receiver may then see an event twice: webhook-id says it is the same).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any


class Lanes:
    """Per-call queues of items run on a pool by deliver(item) -> result."""

    def __init__(self, pool: Executor, deliver: Callable[[Any], Any]) -> None:
        self._pool = pool
        self._deliver = deliver
        self._waiting: dict[str, deque[Any]] = {}
        self._done: deque[tuple[Any, Any]] = deque()
        self._lock = threading.Lock()
        self._generation = 0
        self.drained = threading.Event()  # set while no lane has work
        self.drained.set()
        self.wake: Callable[[], None] = lambda: None

    def add(self, item: Any) -> None:
        """Queue item (its ``call`` names its lane) behind the earlier events of its call."""
        with self._lock:
            lane = self._waiting.get(item.call)
            if lane is not None:
                lane.append(item)
                return
            self._waiting[item.call] = deque([item])
            self.drained.clear()
            generation = self._generation
        self._pool.submit(self._run, item.call, generation)

    def _run(self, call: str, generation: int) -> None:
        while True:
            with self._lock:
                if generation != self._generation:
                    return  # forgotten: a lane of the new connection may have this call's name
                lane = self._waiting[call]
                if not lane:
                    del self._waiting[call]
                    if not self._waiting:
                        self.drained.set()
                    return
                item = lane[0]
            result = self._deliver(item)
            with self._lock:
                if generation == self._generation:
                    lane.popleft()
                    self._done.append((item, result))
            self.wake()

    def finished(self) -> list[tuple[Any, Any]]:
        """What the lanes finished since the last call, in the order they finished."""
        with self._lock:
            done = list(self._done)
            self._done.clear()
        return done

    def forget(self) -> None:
        """Drop every lane and result (the connection they came on is gone)."""
        with self._lock:
            self._generation += 1
            self._waiting.clear()
            self._done.clear()
            self.drained.set()
