"""The SQLite contacts store: CSV import and indexed lookup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from consumers.contacts import SqliteContacts, parse_field_map


@pytest.fixture
def store(tmp_path: Path) -> SqliteContacts:
    return SqliteContacts(tmp_path / "contacts.sqlite3")


def test_import_normalises_keeps_extra_columns_and_skips_bad_rows(
    store: SqliteContacts, tmp_path: Path
) -> None:
    csv_file = tmp_path / "c.csv"
    csv_file.write_text(
        "Name,Phone,Company,Segment\n"
        "Anna,079 123 45 67,Muster AG,gold\n"
        "Nobody,not a number,,\n"
        ",044 123 45 67,,\n"
    )
    imported, problems = store.import_csv(csv_file, "CH")
    assert imported == 1
    assert problems == ["line 3: skipped, phone 'not a number' is not a number", "line 4: skipped, no name"]
    contact = store.lookup("+41791234567")
    assert contact is not None
    assert (contact.name, contact.company, contact.email) == ("Anna", "Muster AG", None)
    extra = store.connection.execute("SELECT extra FROM contacts").fetchone()[0]
    assert json.loads(extra) == {"segment": "gold"}


def test_unknown_number_is_none(store: SqliteContacts) -> None:
    assert store.lookup("+41000000000") is None


def test_missing_required_column_names_it(store: SqliteContacts, tmp_path: Path) -> None:
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("name,tel\nAnna,0791234567\n")
    with pytest.raises(ConfigError) as caught:
        store.import_csv(csv_file, "CH")
    assert str(caught.value) == (
        f"contacts file {str(csv_file)!r} has no 'phone' column; its header is "
        "['name', 'tel']; name and phone are required"
    )


def test_replace_clears_the_store_first(store: SqliteContacts, tmp_path: Path) -> None:
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("name,phone\nAnna,0791234567\n")
    store.import_csv(csv_file, "CH")
    store.import_csv(csv_file, "CH")
    assert store.count() == 2
    store.import_csv(csv_file, "CH", replace=True)
    assert store.count() == 1


def test_lookup_uses_the_index(store: SqliteContacts) -> None:
    plan = store.connection.execute(
        "EXPLAIN QUERY PLAN SELECT name FROM contacts WHERE e164 = ? ORDER BY id LIMIT 1", ("+41",)
    ).fetchall()
    assert any("contacts_e164" in str(tuple(row)) for row in plan)


def test_field_map() -> None:
    assert parse_field_map("name=fullName, company=org.name") == {"name": "fullName", "company": "org.name"}
    with pytest.raises(ConfigError, match="'phone=x' is not field=path"):
        parse_field_map("phone=x")
