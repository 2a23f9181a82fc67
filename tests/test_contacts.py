"""The SQLite contacts store: importing the files call centres really have, updating, looking up."""

from __future__ import annotations

import json
import shutil
import threading
import time
import tracemalloc
import urllib.error
import zipfile
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import openpyxl
import pytest
from click.testing import CliRunner

from bridge import events
from bridge.cli import cli
from bridge.errors import ConfigError
from consumers.crm.contact_files import limits as contact_files
from consumers.crm.contacts import HTTP_ATTEMPTS, SqliteContacts, StoreContacts, request_json
from consumers.crm.settings import parse_field_map

DATA = Path(__file__).parent / "data"


@pytest.fixture
def store(tmp_path: Path) -> SqliteContacts:
    return SqliteContacts(tmp_path / "contacts.sqlite3")


def names(store: StoreContacts, *numbers: str) -> list[str | None]:
    return [(contact.name if (contact := store.lookup(number)) else None) for number in numbers]


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("excel-semicolon-bom.csv", {"+41791234567": "Anna Muster", "+41447654321": "Beat Keller"}),
        ("german-cp1252.csv", {"+41441112233": "Jürg Müller", "+41312223344": "Zoë Bär"}),
        ("french-utf16-tab.txt", {"+41223334455": "Inès Favre", "+33142685300": "Émile Roux"}),
        ("two-phones.csv", {"+41417403536": "Hans Huber", "+41795556677": "Hans Huber"}),  # both numbers pop
        ("excel.xlsx", {"+41769876543": "Carla Rossi", "+41449876543": "Daniel Weber"}),
        # Outlook: Business Phone and Mobile Phone both pop; a company-only entry is named by its company
        (
            "outlook.csv",
            {"+41441112233": "Jürg Müller", "+41791112233": "Jürg Müller", "+41312223344": "Bär Café"},
        ),
        # Google: "a ::: b" in Phone 1 - Value is two numbers; Organization Name names a company-only row
        (
            "google.csv",
            {
                "+41793334455": "Inès Favre",
                "+41783334455": "Inès Favre",
                "+41223334455": "Inès Favre",
                "+33142685300": "Roux SA",
            },
        ),
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


def workbook(path: Path, *rows: Sequence[object]) -> Path:
    """An .xlsx file as openpyxl (and so Excel) writes it: the first sheet, these rows."""
    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def test_outlook_and_google_fields_are_read(store: SqliteContacts) -> None:
    store.import_file(DATA / "outlook.csv", "CH")
    jurg, baer = store.lookup("+41791112233"), store.lookup("+41312223344")
    assert jurg == events.Contact(
        name="Jürg Müller",
        company="Müller & Söhne AG",
        email="jm@mueller.ch",
        url="https://crm.example.com/c/7",
    )
    assert baer == events.Contact(name="Bär Café", company="Bär Café", url="https://baer-cafe.example.ch")
    extra = json.loads(store.rows()[1]["extra"])
    assert extra["Business Street"] == "Bahnhofstrasse 1\nPostfach"  # a quoted field over two lines
    store.import_file(DATA / "google.csv", "CH")
    assert store.lookup("+41223334455") == events.Contact(
        name="Inès Favre", company="Favre Avocats", email="ines@favre.ch"
    )
    assert store.lookup("+33142685300") == events.Contact(
        name="Roux SA", company="Roux SA", url="https://roux.example.fr"
    )


def test_a_company_only_row_is_named_by_its_company(store: SqliteContacts, tmp_path: Path) -> None:
    book = workbook(
        tmp_path / "firmen.xlsx",
        ["Vorname", "Nachname", "Firma", "Telefon"],
        [None, None, "Muster AG", "044 123 45 67"],
        ["Anna", "Muster", "Muster AG", "079 123 45 67"],
        [None, None, None, "041 740 35 36"],  # neither: still no name
    )
    result = store.import_file(book, "CH")
    assert (result.imported, result.skipped, result.problems) == (
        2,
        1,
        ["line 4: skipped, no name (nor company)"],
    )
    assert store.lookup("+41441234567") == events.Contact(name="Muster AG", company="Muster AG")
    assert store.lookup("+41791234567") == events.Contact(name="Anna Muster", company="Muster AG")


def test_a_file_with_a_company_column_and_no_name_column_imports(
    store: SqliteContacts, tmp_path: Path
) -> None:
    file = tmp_path / "lieferanten.csv"
    file.write_text("Firma;Telefon\nBär Café;031 222 33 44\n")
    assert store.import_file(file, "CH").imported == 1
    assert names(store, "+41312223344") == ["Bär Café"]


def test_rows_with_the_same_key_are_merged_and_counted(store: SqliteContacts) -> None:
    """The issue's file: 4 rows, Anna twice; her first row's mobile is kept, her second row's e-mail too."""
    result = store.import_file(DATA / "excel-duplicates.csv", "CH")
    assert (result.imported, result.updated, result.merged, result.skipped) == (3, 0, 1, 0)
    assert result.problems == ["line 4: merged into line 2 (same key '+41441234567')"]
    anna = events.Contact(name="Anna Muster", email="anna@muster.ch")
    assert store.lookup("+41791234567") == store.lookup("+41441234567") == anna
    assert {row["phone"] for row in store.rows() if row["key"] == "+41441234567"} == {
        "044 123 45 67",
        "079 123 45 67",
    }
    assert json.loads(store.rows()[0]["extra"]) == {"Ort": "Zug"}  # the second row had no Ort: kept
    assert store.count() == 3


def test_a_merge_reports_what_a_later_row_changes(store: SqliteContacts, tmp_path: Path) -> None:
    book = workbook(
        tmp_path / "kunden.xlsx",
        ["Kundennummer", "Name", "Telefon", "Mobil", "Firma"],
        ["K-7", "Anna Muster", "044 123 45 67", "079 123 45 67", "Muster AG"],
        ["K-8", "Beat Keller", "044 765 43 21", None, None],
        ["K-7", "Anna Muster-Meier", "041 740 35 36", None, None],
    )
    store.import_file(DATA / "german-cp1252.csv", "CH")
    result = store.import_file(book, "CH", key="Kundennummer")
    assert (result.imported, result.updated, result.merged) == (2, 0, 1)
    assert result.problems == [
        "line 4: merged into line 2 (same key 'K-7'); its name 'Anna Muster-Meier' replaces 'Anna Muster'; "
        "number(s) '041 740 35 36' added"
    ]
    merged = events.Contact(name="Anna Muster-Meier", company="Muster AG")
    assert [store.lookup(n) for n in ("+41441234567", "+41791234567", "+41417403536")] == [merged] * 3
    again = store.import_file(book, "CH", key="Kundennummer")  # the stored K-7 is updated, then merged again
    assert (again.imported, again.updated, again.merged) == (0, 2, 1)
    assert store.count() == 4


def test_import_summary_counts_every_row(tmp_path: Path) -> None:
    env = {"TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml"), "TCX_BRIDGE_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "none.toml").write_text("")
    file = str(DATA / "excel-duplicates.csv")
    result = CliRunner().invoke(cli, ["contacts", "import", file], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{file}: line 4: merged into line 2 (same key '+41441234567')",
        f"imported 3, updated 0, merged 1, skipped 0; 3 contact(s) in {tmp_path / 'data' / 'contacts.sqlite3'}",
    ]


@pytest.mark.parametrize(
    ("column", "length", "problem"),
    [
        ("Name", events.MAX_NAME, None),  # the longest a pop carries: imported
        ("Name", events.MAX_NAME + 1, "its name has 201 characters, more than a screen pop carries (200)"),
        (
            "Firma",
            events.MAX_NAME + 1,
            "its company has 201 characters, more than a screen pop carries (200)",
        ),
        ("E-Mail", events.MAX_NAME + 1, "its email has 201 characters, more than a screen pop carries (200)"),
        ("URL", events.MAX_URL, None),
        ("URL", events.MAX_URL + 1, "its url has 2,049 characters, more than a screen pop carries (2,048)"),
    ],
)
def test_what_a_screen_pop_cannot_carry_is_refused_with_its_line(
    store: SqliteContacts, tmp_path: Path, column: str, length: int, problem: str | None
) -> None:
    value = ("https://crm.example.com/" if column == "URL" else "") + "x" * length
    value = value[:length]
    file = tmp_path / "c.csv"
    anna = {"Name": "Anna", "Telefon": "079 123 45 67", "Firma": "", "E-Mail": "", "URL": "", column: value}
    file.write_text(
        f"Name;Telefon;Firma;E-Mail;URL\nBeat Keller;044 765 43 21;;;\n{';'.join(anna.values())}\n"
    )
    result = store.import_file(file, "CH")
    if problem is None:
        assert (result.imported, result.problems) == (2, [])
        pop = events.ScreenPop(
            event_id="e",
            call_id="c",
            desk="d",
            caller_id="079 123 45 67",
            number_e164="+41791234567",
            contact=store.lookup("+41791234567"),
            occurred_at=events.utc_now(),
        )
        assert events.SCREEN_POP_DECODER.decode(events.ENCODER.encode(pop)) == pop  # the agent reads it
    else:
        assert (result.imported, result.skipped, result.problems) == (1, 1, [f"line 3: skipped, {problem}"])
        assert names(store, "+41791234567") == [None]


def test_a_contact_stored_before_the_limits_still_pops(
    store: SqliteContacts, caplog: pytest.LogCaptureFixture
) -> None:
    """A store filled by an older import (or a CRM's answer) with a 250-character name: cut, not dead-lettered."""
    store.connection.execute(
        "INSERT INTO contacts (key, phone, e164, name, company, url) VALUES (?, ?, ?, ?, ?, ?)",
        ("k", "079 123 45 67", "+41791234567", "N" * 250, "Muster AG", "https://x.example/" + "u" * 3000),
    )
    contact = store.lookup("+41791234567")
    assert contact == events.Contact(name="N" * 199 + "…", company="Muster AG")
    pop = events.ScreenPop(
        event_id="e",
        call_id="c",
        desk="d",
        caller_id=None,
        number_e164="+41791234567",
        contact=contact,
        occurred_at=events.utc_now(),
    )
    assert events.SCREEN_POP_DECODER.decode(events.ENCODER.encode(pop)) == pop
    assert [record.getMessage().split(": ", 1)[1] for record in caplog.records] == [
        "a text over 200 characters is cut for the screen pop",
        "a url over 2048 characters is left out of the screen pop",
    ]


def zip_bomb(path: Path, expanded: int) -> Path:
    """An openpyxl workbook whose sheet is replaced by one that inflates to expanded bytes (a few 100 KB)."""
    book = workbook(path.with_suffix(".seed.xlsx"), ["Name", "Telefon"], ["Anna", "079 123 45 67"])
    row = b'<row r="2"><c r="A2" t="inlineStr"><is><t>' + b"x" * 40 + b"</t></is></c></row>"
    with (
        zipfile.ZipFile(book) as seed,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb,
    ):
        for part in seed.infolist():
            if part.filename != "xl/worksheets/sheet1.xml":
                bomb.writestr(part, seed.read(part))
                continue
            with bomb.open(part.filename, "w") as sheet:
                sheet.write(
                    b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
                )
                chunk = row * 10_000
                for _ in range(expanded // len(chunk)):
                    sheet.write(chunk)
                sheet.write(b"</sheetData></worksheet>")
    return path


def test_a_zip_bomb_is_refused_before_it_is_inflated(store: SqliteContacts, tmp_path: Path) -> None:
    bomb = zip_bomb(tmp_path / "bomb.xlsx", 2 * contact_files.MAX_XLSX_BYTES)
    assert bomb.stat().st_size < 1024 * 1024
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ConfigError) as caught:
            store.import_file(bomb, "CH")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    with zipfile.ZipFile(bomb) as archive:
        expanded = sum(part.file_size for part in archive.infolist()) / 1024 / 1024
    assert str(caught.value) == (
        f"contacts file {str(bomb)!r} expands to {expanded:.1f} MiB, over the 64.0 MiB limit of a workbook "
        "import; save its first sheet alone, or as CSV, or split it"
    )
    assert peak < 2 * 1024 * 1024  # nothing of it was inflated
    assert time.monotonic() - started < 2


def test_a_part_that_lies_about_its_size_is_cut_there(store: SqliteContacts, tmp_path: Path) -> None:
    """A zip directory may state a small size for a part that inflates far more: zipfile stops at it."""
    bomb = zip_bomb(tmp_path / "liar.xlsx", 16 * 1024 * 1024)
    data = bytearray(bomb.read_bytes())
    with zipfile.ZipFile(bomb) as archive:
        part = archive.getinfo("xl/worksheets/sheet1.xml")
        stated = part.file_size.to_bytes(4, "little")
    assert data.count(stated) == 2  # in the part's local header and in the central directory
    data[:] = data.replace(stated, (2000).to_bytes(4, "little"))
    bomb.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as caught:
        store.import_file(bomb, "CH")
    assert str(caught.value) == (
        f"contacts file {str(bomb)!r} is not an .xlsx workbook: Bad CRC-32 for file 'xl/worksheets/sheet1.xml'"
    )


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_too_many_rows_or_cells_is_one_line_naming_the_limit(
    store: SqliteContacts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    monkeypatch.setattr(contact_files, "MAX_ROWS", 5)
    rows = [["Name", "Telefon"]] + [[f"P {n}", f"079 100 00 {n:02d}"] for n in range(6)]
    file = tmp_path / f"c{suffix}"
    if suffix == ".csv":
        file.write_text("\n".join(";".join(row) for row in rows) + "\n")
    else:
        workbook(file, *rows)
    with pytest.raises(ConfigError) as caught:
        store.import_file(file, "CH")
    assert str(caught.value) == (
        f"contacts file {str(file)!r} has more than 5 rows, the limit of one import; "
        "split it into smaller files (rows with the same key update each other across files)"
    )
    assert store.count() == 0  # all or nothing
    monkeypatch.setattr(contact_files, "MAX_ROWS", 1_000_000)
    assert store.import_file(file, "CH").imported == 6


def test_a_sheet_of_wide_rows_is_refused_by_its_cells(
    store: SqliteContacts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cell in column XFD makes openpyxl hand out 16,384 cells for the row: counted as such."""
    monkeypatch.setattr(contact_files, "MAX_CELLS", 100_000)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Name", "Telefon"])
    for n in range(2, 12):
        sheet.cell(row=n, column=1, value=f"P {n}")
        sheet.cell(row=n, column=2, value=f"079 100 00 {n:02d}")
        sheet.cell(row=n, column=16384, value="x")
    book.save(tmp_path / "wide.xlsx")
    with pytest.raises(ConfigError) as caught:
        store.import_file(tmp_path / "wide.xlsx", "CH")
    assert str(caught.value) == (
        f"contacts file {str(tmp_path / 'wide.xlsx')!r} has more than 100,000 cells, the limit of one import; "
        "remove the columns the import does not need, or split it into smaller files"
    )


def test_a_csv_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with big.open("wb") as file:
        file.write(b"Name;Telefon\n")
        file.truncate(300 * 1024 * 1024)  # sparse: no disk, no time
    env = {"TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml"), "TCX_BRIDGE_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "none.toml").write_text("")
    result = CliRunner().invoke(cli, ["contacts", "import", str(big)], env=env)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: contacts file {str(big)!r} is 300.0 MiB, over the 256.0 MiB limit of a CSV import; "
        "split it into smaller files\n"
    )


def test_a_big_csv_is_streamed_in_bounded_memory(store: SqliteContacts, tmp_path: Path) -> None:
    """9 MB of rows (one of them a 2 MB line) are read with far less memory than the file."""
    big = tmp_path / "big.csv"
    padding = "y" * 3000
    with big.open("w") as file:
        file.write("Name;Telefon;Notiz\n")
        file.write("x" * 2_000_000 + "\n")
        for n in range(2500):
            file.write(f"Person {n};079 {n // 10000 % 10}{n % 10000:04d} 00;{padding}\n")
    assert big.stat().st_size > 9_000_000
    tracemalloc.start()
    try:
        result = store.import_file(big, "CH")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.problems == ["line 2: skipped, the line is longer than 4,096 characters"]
    assert (result.imported, result.skipped) == (2500, 1)
    assert peak < 3_000_000  # a 1 MiB read buffer and the rows in hand, not the file


@pytest.mark.integration
def test_merges_and_company_names_in_the_postgresql_store(pg_url: str, tmp_path: Path) -> None:
    """The same import through PostgreSQL: DELETE … RETURNING and the jsonb columns of a merged contact."""
    from bridge.config import load_settings
    from consumers.crm.contacts import open_contacts

    (tmp_path / "none.toml").write_text("")
    settings = load_settings(
        environ={
            "TCX_BRIDGE_CONFIG": str(tmp_path / "none.toml"),
            "TCX_BRIDGE_DATA_DIR": str(tmp_path / "data"),
            "TCX_BRIDGE_STORE_URL": pg_url,
        }
    ).settings
    store = open_contacts(settings)
    try:
        result = store.import_file(DATA / "excel-duplicates.csv", "CH")
        assert (result.imported, result.updated, result.merged, result.skipped) == (3, 0, 1, 0)
        assert store.lookup("+41791234567") == events.Contact(name="Anna Muster", email="anna@muster.ch")
        assert json.loads(store.rows()[0]["extra"]) == {"Ort": "Zug"}
        again = store.import_file(DATA / "excel-duplicates.csv", "CH")
        assert (again.imported, again.updated, again.merged) == (0, 3, 1)
        store.import_file(DATA / "outlook.csv", "CH")
        assert names(store, "+41312223344") == ["Bär Café"]
        assert store.count() == 5
    finally:
        store.close()


class Flaky(BaseHTTPRequestHandler):
    """An HTTP API that answers each GET with the next status of `statuses` (then 200 and JSON)."""

    statuses: ClassVar[list[int]] = []
    hits: ClassVar[int] = 0

    def do_GET(self) -> None:  # http.server's name
        Flaky.hits += 1
        status = Flaky.statuses.pop(0) if Flaky.statuses else 200
        data = b'{"name": "Anna"}' if status == 200 else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_api() -> Iterator[str]:
    Flaky.statuses, Flaky.hits = [], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/contacts"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("statuses", "expected", "hits"),
    [
        ([503, 429], {"name": "Anna"}, 3),  # away, then too busy: the third attempt gets it
        ([404], None, 1),  # no such contact: an answer, not retried
    ],
)
def test_request_json_retries_what_may_pass(
    flaky_api: str, statuses: list[int], expected: object, hits: int
) -> None:
    Flaky.statuses = statuses
    assert request_json("GET", flaky_api, None, timeout=5) == expected
    assert Flaky.hits == hits


def test_request_json_gives_up_after_its_attempts(flaky_api: str) -> None:
    Flaky.statuses = [500] * 10
    with pytest.raises(urllib.error.HTTPError, match="500"):
        request_json("GET", flaky_api, None, timeout=5)
    assert Flaky.hits == HTTP_ATTEMPTS
