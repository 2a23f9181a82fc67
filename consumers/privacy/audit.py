"""The audit trail of every forget, report and sweep: ``<data_dir>/privacy-audit.jsonl``.

One JSON object per line: when, the action, the OS user and the broker user,
the places touched with their row or occurrence counts, and the number only as
its keyed hash (``#`` + 16 hex digits of HMAC-SHA256 with the data dir's
``privacy.key``): the same number gives the same hash, so an auditor can check
that a request was carried out without the trail holding the number.
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import Any

from bridge.events import utc_now

AUDIT_FILE = "privacy-audit.jsonl"


def audit_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / AUDIT_FILE


def os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a container)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def record(
    data_dir: str | Path,
    action: str,
    *,
    broker_user: str | None,
    number_hash: str | None = None,
    places: dict[str, int] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Append one entry to the trail (fsync'd) and return it."""
    entry: dict[str, Any] = {
        "at": utc_now(),
        "action": action,
        "os_user": os_user(),
        "broker_user": broker_user,
        "number_hash": number_hash,
        "places": places or {},
        **extra,
    }
    path = audit_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(entry, sort_keys=True) + "\n")
        file.flush()
        os.fsync(file.fileno())
    return entry


def entries(data_dir: str | Path) -> list[dict[str, Any]]:
    """The trail, oldest first (a line that is not JSON is skipped)."""
    path = audit_path(data_dir)
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found
