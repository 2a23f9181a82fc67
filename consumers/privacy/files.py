"""A number in the data dir's files: the outbox (with refused/ and corrupt/) and the log files.

A file that holds the number is rewritten with ``[erased]`` in its place (into a
temporary file, fsync'd, renamed over it: the old bytes are no longer reachable
through the file system). An outboxed event keeps its place and is still
published later, with ``[erased]`` as its caller id and in its ``argv``, so the
call still counts. The outbox is rewritten under its replay lock, so no replay
publishes an event while it changes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from bridge.config import Settings
from bridge.outbox.files import TEMPORARY, fsync_directory, locked
from consumers.privacy.forms import Forms, erase_in_text, find_in_text
from consumers.privacy.sweep import older_than

ROTATED = (".1", ".2", ".3", ".4", ".5", ".old")  # notify.log.1, a logrotate's crm.log.1, ...


def files_of(settings: Settings) -> Iterator[Path]:
    """Every file of the outbox (refused/, corrupt/ too) and of the log directory."""
    for directory in (settings.outbox_dir, settings.log_dir):
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*")):
            if path.is_file() and not path.name.startswith(".lock"):
                yield path


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "surrogateescape")


def find(settings: Settings, forms: Forms) -> dict[Path, list[str]]:
    """Each file that holds the number, with the lines that hold it."""
    found: dict[Path, list[str]] = {}
    for path in files_of(settings):
        try:
            text = _text(path)
        except OSError:
            continue
        lines = [line for line in text.splitlines() if find_in_text(line, forms)]
        if lines:
            found[path] = lines
    return found


def _rewrite(path: Path, text: str) -> None:
    temporary = path.parent / f"{TEMPORARY}{os.getpid()}-{path.name}"
    with temporary.open("wb") as handle:
        handle.write(text.encode("utf-8", "surrogateescape"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


def erase(settings: Settings, forms: Forms) -> dict[str, int]:
    """Rewrite every file holding the number; occurrences per place (``outbox``, ``logs``)."""
    counts: dict[str, int] = {}
    with locked(settings.outbox_dir, 30.0) if settings.outbox_dir.is_dir() else contextlib.nullcontext(True):
        for path in files_of(settings):
            try:
                text, found = erase_in_text(_text(path), forms)
                if found:
                    _rewrite(path, text)
            except OSError:
                continue
            if found:
                place = "outbox" if settings.outbox_dir in path.parents else "logs"
                counts[place] = counts.get(place, 0) + found
    return counts


def sweep_logs(settings: Settings, now: datetime) -> int:
    """Delete the rotated log files last written before retention_logs; how many."""
    before = older_than(now, settings.retention_logs)
    if before is None or not settings.log_dir.is_dir():
        return 0
    deleted = 0
    for path in settings.log_dir.iterdir():
        if path.is_file() and path.name.endswith(ROTATED) and path.stat().st_mtime < before:
            path.unlink(missing_ok=True)
            deleted += 1
    return deleted
