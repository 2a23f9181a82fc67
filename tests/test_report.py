"""report prints stored values safely: no raw control characters, bounded cells."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import cli
from consumers.calls import CALLS_SCHEMA
from consumers.store import open_database

RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # newline and tab allowed
HOSTILE = ["\x1b[2J\x1b]0;owned\x07", "\x00nul", "\u202eevil", "\x9bC1", "7" * 1_000_000]


@pytest.fixture
def stored(tmp_path: Path) -> dict[str, str]:
    """An analytics store holding hostile caller ids (written by an older version, or by hand)."""
    data = tmp_path / "data"
    db = open_database(data / "analytics.sqlite3", CALLS_SCHEMA)
    for n, caller in enumerate(HOSTILE):
        db.execute(
            "INSERT INTO calls (desk, direction, call_id, caller_id, started_at, ended_at, answered) "
            "VALUES ('d1', 'inbound', ?, ?, '2026-11-02T09:00:00.000000Z', '2026-11-02T09:01:00.000000Z', 0)",
            (f"c{n}", caller),
        )
    db.close()
    (tmp_path / "config.toml").write_text("")
    return {"TCX_BRIDGE_DATA_DIR": str(data), "TCX_BRIDGE_CONFIG": str(tmp_path / "config.toml")}


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_report_calls_escapes_control_characters(stored: dict[str, str], fmt: str) -> None:
    result = CliRunner().invoke(cli, ["report", "--calls", "--format", fmt], env=stored)
    assert result.exit_code == 0, result.output
    assert RAW_CONTROL.search(result.output) is None
    assert "owned" in result.output  # the value is shown, made harmless


def test_report_table_cells_are_cut_so_the_output_stays_small(stored: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["report", "--calls"], env=stored)
    assert result.exit_code == 0
    assert len(result.output) < 5_000  # a 1 MB caller id would otherwise pad every row
    assert "7777…" in result.output
    assert "\\x1b[2J" in result.output
