"""What the running consumer tells the ``webhooks`` commands, through files in ``<data_dir>/webhooks/``.

    state.json      written by ``consume webhooks`` every STATE_EVERY seconds: each target's state,
                    counts, last status and backlog (``webhooks list`` reads it)
    enable-<NAME>   written by ``webhooks enable NAME``: the consumer resumes that target and removes it

So these two commands work where the consumer runs (the same data_dir), as the
SQLite store does; ``list`` also asks the broker for each queue's depth.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STATE_EVERY = 1.0


def directory(data_dir: str) -> Path:
    return Path(data_dir) / "webhooks"


def write_state(data_dir: str, targets: dict[str, dict[str, Any]]) -> None:
    """Replace the state file at once (a reader never sees half of it)."""
    folder = directory(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".state.{os.getpid()}.json"
    temporary.write_text(json.dumps({"written": time.time(), "targets": targets}, indent=1), encoding="utf-8")
    temporary.replace(folder / "state.json")


def read_state(data_dir: str) -> dict[str, Any]:
    """The last state written ({} when the consumer never ran here)."""
    try:
        found = json.loads((directory(data_dir) / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def request_enable(data_dir: str, name: str) -> Path:
    folder = directory(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"enable-{name}"
    path.write_text(str(time.time()), encoding="utf-8")
    return path


def enable_requested(data_dir: str, name: str) -> bool:
    """Whether `webhooks enable NAME` asked since the last look (the request is used up)."""
    path = directory(data_dir) / f"enable-{name}"
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
