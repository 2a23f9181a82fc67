"""report prints stored values safely: no raw control characters, bounded cells."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import cli
from consumers.analytics.calls import CALLS_SCHEMA
from consumers.store.core import open_database

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


@pytest.fixture
def mixed(tmp_path: Path) -> dict[str, str]:
    """Two days, two desks, inbound answered and missed, outbound connected and not."""
    data = tmp_path / "data"
    db = open_database(data / "analytics.sqlite3", CALLS_SCHEMA)
    rows = [
        ("d1", "inbound", "a", "2026-11-02T09:00:00.000000Z", "2026-11-02T09:00:05.000000Z", 60.0, 1),
        ("d1", "inbound", "b", "2026-11-02T10:00:00.000000Z", None, None, 0),
        ("d2", "outbound", "c", "2026-11-02T11:00:00.000000Z", "2026-11-02T11:00:09.000000Z", 30.0, 1),
        ("d2", "outbound", "d", "2026-11-02T12:00:00.000000Z", None, None, 0),
        ("d2", "inbound", "e", "2026-11-03T09:00:00.000000Z", "2026-11-03T09:00:02.000000Z", 10.0, 1),
    ]
    for desk, direction, call_id, started, connected, talk, answered in rows:
        db.execute(
            "INSERT INTO calls (desk, direction, call_id, started_at, connected_at, ended_at, talk_seconds, answered) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (desk, direction, call_id, started, connected, started, talk, answered),
        )
    db.close()
    (tmp_path / "config.toml").write_text("")
    return {"TCX_BRIDGE_DATA_DIR": str(data), "TCX_BRIDGE_CONFIG": str(tmp_path / "config.toml")}


def test_answer_rate_is_inbound_and_outbound_is_counted_apart(mixed: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["report", "--format", "json"], env=mixed)
    day = json.loads(result.output)["by_day"][0]
    assert (day["calls"], day["answered"], day["missed"], day["answer_rate"]) == (4, 1, 1, 0.5)
    assert (day["dialed"], day["connected"], day["out_talk_avg"]) == (2, 1, 30.0)


def test_report_since_until_and_desk(mixed: dict[str, str]) -> None:
    def calls(*options: str) -> list[str]:
        result = CliRunner().invoke(cli, ["report", "--calls", "--format", "json", *options], env=mixed)
        assert result.exit_code == 0, result.output
        return [row["call_id"] for row in json.loads(result.output)]

    assert calls("--since", "2026-11-03") == ["e"]
    assert calls("--until", "2026-11-02") == ["a", "b", "c", "d"]  # a day: up to its end
    assert calls("--since", "2026-11-02T10:30:00+00:00", "--until", "2026-11-02T12:00:00Z") == ["c"]
    assert calls("--desk", "d2", "--since", "2026-11-02") == ["c", "d", "e"]
    bad = CliRunner().invoke(cli, ["report", "--since", "last week"], env=mixed)
    assert bad.exit_code == 1
    assert bad.output.strip() == "Error: --since 'last week' is not a day (2026-11-02) or an RFC 3339 time"


def test_journal_reads_back_what_the_crm_stored(tmp_path: Path) -> None:
    from consumers.store.core import open_sqlite

    data = tmp_path / "data"
    db = open_sqlite(data / "crm.sqlite3", "crm")
    for key, desk, ended in (
        (1, "d1", "2026-11-02T09:01:00.000000Z"),
        (2, "d2", "2026-11-03T09:01:00.000000Z"),
    ):
        db.execute(
            "INSERT INTO journal (call_key, desk, direction, call_id, number, number_e164, contact_name, "
            "answered, ended_at) VALUES (?, ?, 'inbound', ?, '079 123 45 67', '+41791234567', "
            "'Anna \x1b[31mMuster', 1, ?)",
            (key, desk, f"c{key}", ended),
        )
    db.close()  # autocommit: each insert is stored
    (tmp_path / "config.toml").write_text("")
    env = {"TCX_BRIDGE_DATA_DIR": str(data), "TCX_BRIDGE_CONFIG": str(tmp_path / "config.toml")}
    result = CliRunner().invoke(cli, ["journal", "--format", "json", "--since", "2026-11-03"], env=env)
    assert result.exit_code == 0, result.output
    assert [(row["desk"], row["call_id"]) for row in json.loads(result.output)] == [("d2", "c2")]
    table = CliRunner().invoke(cli, ["journal", "--desk", "d1"], env=env)
    assert "Anna \\x1b[31mMuster" in table.output
    assert "\x1b" not in table.output
