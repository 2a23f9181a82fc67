"""Events the broker refused for good, set aside in ``refused/`` with their reasons until a command.

``retry`` moves them back (under their old names, so in their old place in the
order), ``drop`` deletes them; both wait for the replay lock.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from bridge.errors import OutboxError
from bridge.outbox.files import SUFFIX, TEMPORARY, OutboxFiles, event_names, fsync_directory, mtime

logger = logging.getLogger("bridge.outbox")

REFUSED = "refused"  # the subdirectory of events the broker refused for good
_REASON = ".reason"


class Refused(NamedTuple):
    """An event the broker refused for good, waiting in refused/ for a command."""

    path: Path
    reason: str
    refused_at: float  # seconds since the epoch

    @property
    def event_id(self) -> str:
        """The event's id, from its file name ``<time_ns>-<event_id>.json``."""
        return self.path.name.removesuffix(SUFFIX).partition("-")[2]


class RefusedFiles(OutboxFiles):
    """The outbox's files, and the refused/ beside them."""

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
            temporary = refused / f"{TEMPORARY}{os.urandom(16).hex()}"
            temporary.write_text(reason + "\n", encoding="utf-8")
            os.replace(temporary, sidecar)  # the reason first: an event in refused/ always has one
            os.replace(path, target)
            fsync_directory(refused)
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
        found = []
        for name in event_names(self.refused_dir):
            path = self.refused_dir / name
            sidecar = self.refused_dir / f"{name}{_REASON}"
            try:
                reason, when = sidecar.read_text(encoding="utf-8").strip(), sidecar.stat().st_mtime
            except OSError:
                reason, when = "(no reason recorded)", mtime(path)
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
