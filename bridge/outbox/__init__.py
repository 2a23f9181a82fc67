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

from bridge.outbox.files import ORPHAN_AGE, Entry
from bridge.outbox.refused import REFUSED, Refused
from bridge.outbox.replay import WINDOW, BatchPublisher, Replay, Replaying

__all__ = ["ORPHAN_AGE", "REFUSED", "WINDOW", "BatchPublisher", "Entry", "Outbox", "Refused", "Replay"]


class Outbox(Replaying):
    """A directory of events waiting for the broker.

    Its parts, one module each: ``files`` (write, list, read, orphans, the lock),
    ``refused`` (set aside, list, retry, drop) and ``replay``.
    """
