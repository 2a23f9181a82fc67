"""The durable local outbox: events the broker did not confirm wait here.

One file per event in ``<data_dir>/outbox``, named ``<time_ns>-<event_id>.json``
so that name order is age order. A file appears atomically (written to a hidden
temporary file, fsync'd, renamed, directory fsync'd), so a crash or power cut
never leaves half an event. Replay holds an exclusive lock on ``.lock`` (released
by the OS if the process dies), so concurrent launches and ``spool flush`` never
publish the same file twice. A temporary file left by a launch killed between its
fsync and its rename (an orphan, older than ``ORPHAN_AGE``) is recovered into the
outbox by the next replay when it holds a complete event, and removed when it
does not.

Replay publishes a window (``WINDOW``) at a time and waits for its confirms; the
confirmed files of a window are then named in the journal ``.sent`` with one
fsync'd append, and from there on they are done: ``paths()`` (and so every count
of pending events: ``spool list``, status, ``doctor``, the agent's gauges) does
not list them. They are removed on threads once the replay returned (it does not
wait for them; the next replay in the process, or ``join_cleanup()``, does, and
raises an OutboxError if one could not be removed; it stays named in ``.sent``,
never published again). Each replay, under the lock, first removes every file
``.sent`` names, syncs the directory, and only then empties ``.sent``: so a crash
at any point neither loses an event nor makes a sent one pending again. A window
of fewer than ``JOURNAL_MIN`` (one at a time, a launch's few) is removed at once.

The contract is at-least-once, with the same event_id: a crash after the broker
confirmed a window and before its ``.sent`` append was synced replays that
window; a last line of ``.sent`` torn by a crash names nothing, so that one event
is replayed (each append begins with a newline: a torn line never swallows a
later name).

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

from bridge.outbox.files import ORPHAN_AGE, Entry
from bridge.outbox.refused import REFUSED, Refused
from bridge.outbox.replay import WINDOW, BatchPublisher, Replay, Replaying
from bridge.outbox.sent import JOURNAL_MIN

__all__ = [
    "JOURNAL_MIN",
    "ORPHAN_AGE",
    "REFUSED",
    "WINDOW",
    "BatchPublisher",
    "Entry",
    "Outbox",
    "Refused",
    "Replay",
]


class Outbox(Replaying):
    """A directory of events waiting for the broker.

    Its parts, one module each: ``files`` (write, list, read, orphans, the lock),
    ``refused`` (set aside, list, retry, drop), ``sent`` (the journal of published
    files and their removal) and ``replay``.
    """
