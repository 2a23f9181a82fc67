"""The SQLite contacts store: importing the files call centres really have, updating, looking up."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from consumers.contacts import SqliteContacts, parse_field_map

DATA = Path(__file__).parent / "data"


@pytest.fixture
def store(tmp_path: Path) -> SqliteContacts:
    return SqliteContacts(tmp_path / "contacts.sqlite3")


def names(store: SqliteContacts, *numbers: str) -> list[str | None]:
    return [(contact.name if (contact := store.lookup(number)) else None) for number in numbers]


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("excel-semicolon-bom.csv", {"+41791234567": "Anna Muster", "+41447654321": "Beat Keller"}),
        ("german-cp1252.csv", {"+41441112233": "Jürg Müller", "+41312223344": "Zoë Bär"}),
        ("french-utf16-tab.txt", {"+41223334455": "Inès Favre", "+33142685300": "Émile Roux"}),
        ("two-phones.csv", {"+41417403536": "Hans Huber", "+41795556677": "Hans Huber"}),  # both numbers pop
        ("excel.xlsx", {"+41769876543": "Carla Rossi", "+41449876543": "Daniel Weber"}),
    ],
)
def test_real_world_files_import_to_the_expected_contacts(
    store: SqliteContacts, file: str, expected: dict[str, str]
) -> None:
    result = store.import_file(DATA / file, "CH")
    assert result.problems == []
    assert (result.imported, result.updated, result.skipped) == (len(set(expected.values())), 0, 0)
    assert names(store, *expected) == list(expected.values())


def test_fields_and_other_columns_are_kept(store: SqliteContacts) -> None:
    store.import_file(DATA / "excel-semicolon-bom.csv", "CH", key="kundennummer")
    contact = store.lookup("+41791234567")
    assert contact is not None
    assert (contact.company, contact.email, contact.url) == (
        "Muster AG",
        "anna@muster.ch",
        "https://crm.example.com/c/1",
    )
    rows = store.rows()
    assert rows[0]["key"] == "K-1001"
    assert json.loads(rows[0]["extra"]) == {"kundennummer": "K-1001"}
    cp1252 = store.import_file(DATA / "german-cp1252.csv", "CH")
    assert cp1252.imported == 2
    assert store.lookup("+41441112233").company == "Müller & Söhne AG"  # type: ignore[union-attr]


def test_a_stray_quote_breaks_its_row_only(store: SqliteContacts) -> None:
    result = store.import_file(DATA / "stray-quote.csv", "CH")
    assert result.problems == ['line 4: skipped, a quote is not closed (a stray " in the row?)']
    assert (result.imported, result.skipped) == (9, 1)
    assert names(store, "+41791000010") == ["Person 10"]  # the rows after it are all there


def test_reimport_updates_by_number_and_the_new_name_pops(store: SqliteContacts, tmp_path: Path) -> None:
    edited = tmp_path / "edited.csv"
    shutil.copy(DATA / "german-cp1252.csv", edited)
    store.import_file(edited, "CH")
    edited.write_bytes(
        edited.read_bytes().replace("Jürg Müller".encode("cp1252"), "Jürg Müller-Meier".encode("cp1252"))
    )
    result = store.import_file(edited, "CH")
    assert (result.imported, result.updated) == (0, 2)
    assert names(store, "+41441112233") == ["Jürg Müller-Meier"]
    assert store.count() == 2


def test_reimport_by_external_key_follows_a_changed_number(store: SqliteContacts, tmp_path: Path) -> None:
    first = tmp_path / "a.csv"
    first.write_text("Kundennummer;Name;Telefon\nK-7;Anna;079 123 45 67\n")
    store.import_file(first, "CH", key="Kundennummer")
    first.write_text("Kundennummer;Name;Telefon\nK-7;Anna Neu;079 765 43 21\n")
    result = store.import_file(first, "CH", key="kundennummer")
    assert result.updated == 1
    assert names(store, "+41797654321", "+41791234567") == ["Anna Neu", None]  # the old number is gone


def test_map_names_the_columns_aliases_do_not_know(store: SqliteContacts, tmp_path: Path) -> None:
    file = tmp_path / "odd.csv"
    file.write_text("Kunde|Geschäftsnummer|Privat\nAnna|044 123 45 67|079 123 45 67\n")
    result = store.import_file(file, "CH", mapping="name=Kunde,phone=Geschäftsnummer,phone=Privat")
    assert result.imported == 1
    assert names(store, "+41441234567", "+41791234567") == ["Anna", "Anna"]


def test_bad_rows_are_reported_with_their_line(store: SqliteContacts, tmp_path: Path) -> None:
    file = tmp_path / "c.csv"
    file.write_text("Name,Phone,Segment\nAnna,079 123 45 67,gold\nNobody,not a number,\n,044 123 45 67,\n")
    result = store.import_file(file, "CH")
    assert result.imported == 1
    assert result.problems == [
        "line 3: skipped, no usable phone number ('not a number')",
        "line 4: skipped, no name (nor company)",
    ]
    assert json.loads(store.rows()[0]["extra"]) == {"Segment": "gold"}


def test_missing_columns_name_the_header(store: SqliteContacts, tmp_path: Path) -> None:
    file = tmp_path / "c.csv"
    file.write_text("Name;Ort\nAnna;Zug\n")
    with pytest.raises(ConfigError) as caught:
        store.import_file(file, "CH")
    assert str(caught.value) == (
        "no column for a phone in the header ['Name', 'Ort']; name them (e.g. Name, Telefon) "
        "or map them with --map phone=<column>,name=<column>"
    )


def test_replace_clears_the_store_first(store: SqliteContacts, tmp_path: Path) -> None:
    store.import_file(DATA / "german-cp1252.csv", "CH")
    store.import_file(DATA / "two-phones.csv", "CH")
    assert store.count() == 3
    store.import_file(DATA / "two-phones.csv", "CH", replace=True)
    assert store.count() == 1


def test_an_old_store_without_keys_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "contacts.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, e164 TEXT NOT NULL, phone TEXT NOT NULL, "
        "name TEXT NOT NULL, company TEXT, email TEXT, url TEXT, extra TEXT);"
        "INSERT INTO contacts (e164, phone, name) VALUES ('+41441112233', '044 111 22 33', 'Old Name');"
    )
    old.close()
    store = SqliteContacts(path)
    store.import_file(DATA / "german-cp1252.csv", "CH")
    assert names(store, "+41441112233") == ["Jürg Müller"]
    assert store.count() == 2


def test_lookup_uses_the_index(store: SqliteContacts) -> None:
    plan = store.connection.execute(
        "EXPLAIN QUERY PLAN SELECT name FROM contacts WHERE e164 = ? ORDER BY id DESC LIMIT 1", ("+41",)
    ).fetchall()
    assert any("contacts_e164" in str(tuple(row)) for row in plan)


def test_field_map() -> None:
    assert parse_field_map("name=fullName, company=org.name") == {"name": "fullName", "company": "org.name"}
    with pytest.raises(ConfigError, match="'phone=x' is not field=path"):
        parse_field_map("phone=x")
