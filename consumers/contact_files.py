"""Read contact lists as call centres export them: CSV of any usual dialect, or an Excel workbook.

* encoding: UTF-8 with or without BOM, UTF-16 with BOM (Excel's "Unicode text"),
  else cp1252 (Windows Notepad and older Excel); ``encoding`` overrides;
* delimiter: ``,`` ``;`` tab or ``|``, detected from the header line; ``delimiter`` overrides;
* headers matched case- and accent-insensitively against English, German and
  French aliases (:data:`ALIASES`); ``mapping`` (``--map phone=Geschäft,mobile=Natel``)
  names the rest. Every phone and mobile column is a number of the contact; first
  and last name columns are joined into the name;
* a broken row (a stray quote that would swallow what follows, a field spanning
  more than ``MAX_RECORD_LINES`` lines or ``MAX_RECORD_BYTES``) is reported with its
  line number and skipped, and reading goes on with the next line;
* ``.xlsx``: the first sheet, its first row the header (openpyxl, the ``xlsx`` extra).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from bridge.errors import ConfigError
from bridge.text import unneutralise_formula

MAX_RECORD_LINES = 5
MAX_RECORD_BYTES = 4096
DELIMITERS = ",;\t|"
FIELDS = ("name", "first", "last", "phone", "mobile", "company", "email", "url")
ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "nom", "fullname", "kontakt", "contact", "kontaktname", "displayname", "anzeigename"),
    "first": ("firstname", "first", "vorname", "prenom", "givenname"),
    "last": ("lastname", "last", "nachname", "familienname", "surname", "nomdefamille"),
    "phone": (
        "phone",
        "telefon",
        "tel",
        "telephone",
        "telefonnummer",
        "phonenumber",
        "festnetz",
        "businessphone",
        "telgeschaft",
        "telefongeschaft",
        "nummer",
        "number",
        "numero",
    ),
    "mobile": (
        "mobile",
        "mobil",
        "handy",
        "natel",
        "portable",
        "cell",
        "cellphone",
        "mobilephone",
        "mobiltelefon",
    ),
    "company": ("company", "firma", "societe", "organisation", "organization", "unternehmen", "entreprise"),
    "email": ("email", "mail", "emailadresse", "courriel", "adresseemail"),
    "url": ("url", "website", "webseite", "link", "lien", "siteweb", "homepage", "crmlink"),
}


class ContactRow(NamedTuple):
    """One contact read from a file: its line, fields, numbers as written, and the other columns."""

    line: int
    name: str
    numbers: tuple[str, ...]
    company: str | None
    email: str | None
    url: str | None
    columns: dict[str, str]


class ContactFile(NamedTuple):
    rows: list[ContactRow]
    problems: list[str]
    header: list[str]
    encoding: str
    delimiter: str


def fold(text: str) -> str:
    """A header as compared: lower case, accents and everything but letters and digits removed."""
    plain = unicodedata.normalize("NFKD", text.strip().lower())
    return "".join(c for c in plain if c.isalnum() and not unicodedata.combining(c))


def parse_mapping(text: str | None) -> list[tuple[str, str]]:
    """``phone=Geschäft,mobile=Natel`` -> [("phone", "geschaft"), ("mobile", "natel")] (repeatable fields)."""
    pairs = []
    for part in filter(None, (item.strip() for item in (text or "").split(","))):
        field, _, column = part.partition("=")
        if field.strip() not in FIELDS or not column.strip():
            raise ConfigError(f"--map {part!r} is not field=column with field one of {', '.join(FIELDS)}")
        pairs.append((field.strip(), fold(column)))
    return pairs


def columns_of(header: list[str], mapping: list[tuple[str, str]], key: str | None) -> dict[int, str]:
    """Which of our fields each header column is (index -> field); ConfigError without name or phone."""
    folded = [fold(name) for name in header]
    found: dict[int, str] = {}
    for field, column in mapping:
        if column not in folded:
            raise ConfigError(f"--map names column {column!r}, which the header {header!r} does not have")
        found[folded.index(column)] = field
    for index, name in enumerate(folded):
        if index in found or (key is not None and name == fold(key)):
            continue
        alias = next((known for known, aliases in ALIASES.items() if name in aliases), None)
        if alias is not None:
            found[index] = alias
    fields = list(found.values())
    if "first" in fields and "name" in fields and "last" not in fields:  # French "Prénom" + "Nom"
        found = {index: "last" if field == "name" else field for index, field in found.items()}
        fields = list(found.values())
    has_name = "name" in fields or "first" in fields or "last" in fields
    has_phone = "phone" in fields or "mobile" in fields
    if not has_name or not has_phone:
        missing = " and ".join(what for what, ok in (("a name", has_name), ("a phone", has_phone)) if not ok)
        raise ConfigError(
            f"no column for {missing} in the header {header!r}; name them (e.g. Name, Telefon) "
            "or map them with --map phone=<column>,name=<column>"
        )
    if key is not None and fold(key) not in folded:
        raise ConfigError(f"--key {key!r} is not a column of the header {header!r}")
    return found


def decode(raw: bytes, encoding: str | None) -> tuple[str, str]:
    """(text, encoding used): the override, else by BOM, else UTF-8, else cp1252."""
    if encoding:
        try:
            return raw.decode(encoding), encoding
        except (LookupError, UnicodeDecodeError) as error:
            raise ConfigError(f"--encoding {encoding!r} cannot read the file: {error}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", "replace"), "utf-8-sig"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", "replace"), "utf-16"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace"), "cp1252"


def sniff_delimiter(header_line: str) -> str:
    """The delimiter the header line uses most (comma when it has none of them)."""
    counts = {delimiter: header_line.count(delimiter) for delimiter in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _unfinished(record: str, delimiter: str) -> bool:
    """True while a quoted field is still open at the end of record (csv's own reading)."""
    try:
        list(csv.reader(io.StringIO(record), delimiter=delimiter, strict=True))
    except csv.Error as error:
        return "unexpected end of data" in str(error)
    return False


def records(text: str, delimiter: str) -> Iterator[tuple[int, str | None]]:
    """(first line number, record text) for each record; (line, None) for a broken one.

    A record continues over line breaks only inside a quoted field; one that would
    span more than MAX_RECORD_LINES lines or MAX_RECORD_BYTES is a stray quote: its
    first line is reported broken and reading restarts on the line after it.
    """
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        record, end = lines[index], index
        while _unfinished(record, delimiter) and end + 1 < len(lines) and end - index + 1 < MAX_RECORD_LINES:
            end += 1
            record += "\n" + lines[end]
        if _unfinished(record, delimiter) or len(record) > MAX_RECORD_BYTES:
            yield index + 1, None
            index += 1
            continue
        yield index + 1, record
        index = end + 1


def read_csv(
    path: Path,
    *,
    encoding: str | None,
    delimiter: str | None,
    mapping: list[tuple[str, str]],
    key: str | None,
) -> ContactFile:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"contacts file {str(path)!r} cannot be read: {error.strerror}") from None
    text, used = decode(raw, encoding)
    first_line = next((line for line in text.splitlines() if line.strip()), None)
    if first_line is None:
        raise ConfigError(f"contacts file {str(path)!r} is empty; the first line must be the header")
    delimiter = delimiter or sniff_delimiter(first_line)
    all_records = records(text, delimiter)
    header_record = next((r for _, r in all_records if r is not None and r.strip()), first_line)
    header = next(csv.reader(io.StringIO(header_record), delimiter=delimiter))
    found = columns_of(header, mapping, key)
    rows: list[ContactRow] = []
    problems: list[str] = []
    for line, record in all_records:
        if record is None:
            problems.append(f'line {line}: skipped, a quote is not closed (a stray " in the row?)')
            continue
        if not record.strip():
            continue
        try:
            cells = next(csv.reader(io.StringIO(record), delimiter=delimiter))
        except (csv.Error, StopIteration) as error:
            problems.append(f"line {line}: skipped, not a CSV row ({error})")
            continue
        rows.append(_row(line, header, cells, found))
    return ContactFile(rows, problems, header, used, delimiter)


def read_xlsx(path: Path, *, mapping: list[tuple[str, str]], key: str | None) -> ContactFile:
    try:
        import openpyxl
    except ImportError:
        raise ConfigError(
            "reading .xlsx files needs openpyxl: pip install 'tcx-bridge[xlsx]' (or save the sheet as CSV)"
        ) from None
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except OSError as error:
        raise ConfigError(f"contacts file {str(path)!r} cannot be read: {error.strerror}") from None
    except Exception as error:  # noqa: BLE001  # openpyxl raises many kinds for a file that is no workbook
        raise ConfigError(f"contacts file {str(path)!r} is not an .xlsx workbook: {error}") from None
    try:
        sheet = workbook.worksheets[0]
        table = [
            ["" if cell is None else _cell_text(cell) for cell in row]
            for row in sheet.iter_rows(values_only=True)
        ]
    finally:
        workbook.close()
    if not table:
        raise ConfigError(
            f"contacts file {str(path)!r} has an empty first sheet; the first row must be the header"
        )
    header = table[0]
    found = columns_of(header, mapping, key)
    rows = [_row(line, header, cells, found) for line, cells in enumerate(table[1:], start=2) if any(cells)]
    return ContactFile(rows, [], header, "xlsx", "")


def _cell_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a phone number typed as a number
    return str(value)


def _row(line: int, header: list[str], cells: list[str], found: dict[int, str]) -> ContactRow:
    values: dict[str, list[str]] = {}
    others: dict[str, str] = {}
    for index, cell in enumerate(cells):
        cell = unneutralise_formula(cell.strip())  # a cell of our own CSV export reads back as it was
        if not cell:
            continue
        field = found.get(index)
        if field is None:
            if index < len(header) and header[index].strip():
                others[header[index].strip()] = cell
            continue
        values.setdefault(field, []).append(cell)
    name = " ".join(values.get("name", [])) or " ".join(values.get("first", []) + values.get("last", []))
    numbers = tuple(values.get("phone", []) + values.get("mobile", []))
    return ContactRow(
        line=line,
        name=name.strip(),
        numbers=numbers,
        company=_first(values, "company"),
        email=_first(values, "email"),
        url=_first(values, "url"),
        columns=others,
    )


def _first(values: dict[str, list[str]], field: str) -> str | None:
    found = values.get(field)
    return found[0] if found else None


def read_contacts(
    path: Path,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    mapping: str | None = None,
    key: str | None = None,
) -> ContactFile:
    """Read a contacts file (.csv/.txt of any usual dialect, or .xlsx)."""
    pairs = parse_mapping(mapping)
    if delimiter is not None:
        delimiter = {"tab": "\t", "\\t": "\t"}.get(delimiter.lower(), delimiter)
        if len(delimiter) != 1:
            raise ConfigError(f"--delimiter {delimiter!r} must be one character (or 'tab')")
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return read_xlsx(path, mapping=pairs, key=key)
    return read_csv(path, encoding=encoding, delimiter=delimiter, mapping=pairs, key=key)
