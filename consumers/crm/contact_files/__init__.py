"""Read contact lists as call centres export them: CSV of any usual dialect, or an Excel workbook.

* encoding: UTF-8 with or without BOM, UTF-16 with BOM (Excel's "Unicode text"),
  else cp1252 (Windows Notepad and older Excel); ``encoding`` overrides;
* delimiter: ``,`` ``;`` tab or ``|``, detected from the header line; ``delimiter`` overrides;
* headers matched case- and accent-insensitively against English, German and
  French aliases (:data:`ALIASES`), Outlook's and Google's export headers included
  (``E-mail 2 Address``, ``Phone 1 - Value``: digits and a trailing "value" are
  ignored); ``mapping`` (``--map phone=Geschäft,mobile=Natel``) names the rest.
  Every phone and mobile column is a number of the contact (Google's
  ``a ::: b`` cells are split); first and last name columns are joined into the
  name; a file with only a company column is accepted (the importer names such
  contacts by their company);
* a broken row (a stray quote that would swallow what follows, a field spanning
  more than ``MAX_RECORD_LINES`` lines or ``MAX_RECORD_BYTES``) is reported with its
  line number and skipped, and reading goes on with the next line;
* ``.xlsx``: the first sheet, its first non-empty row the header (openpyxl, the
  ``xlsx`` extra, read-only: rows are streamed, cut to the header's width).

The header is read at once (a missing column is an error before anything is
imported); the rows are read as the importer takes them, so memory stays flat
whatever the file's size: a CSV is a text stream (the UTF-8 check is one pass in
chunks, a line is read at most ``MAX_RECORD_BYTES`` at a time), and problems are
counted with only the first ``MAX_LISTED`` kept. Size guards, each one ConfigError
naming the file and the limit: a CSV file over ``MAX_CSV_BYTES`` (from its size,
before reading); a workbook whose parts expand to more than ``MAX_XLSX_BYTES``
(from the zip directory, before openpyxl opens it; zipfile stops every part at its
stated size, so a zip bomb is refused before it is inflated); more than
``MAX_ROWS`` rows or ``MAX_CELLS`` cells (counted while reading).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import unicodedata
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from bridge.errors import ConfigError
from bridge.text import unneutralise_formula

MAX_RECORD_LINES = 5
MAX_RECORD_BYTES = 4096
MAX_ROWS = 1_000_000  # contact rows in one file
MAX_CELLS = 20_000_000  # cells in one file, empty ones within a row included
MAX_CSV_BYTES = 256 * 1024 * 1024  # a CSV file as stored (it is read as a stream)
MAX_XLSX_BYTES = 64 * 1024 * 1024  # a workbook's parts, uncompressed (openpyxl holds its strings)
TOO_LONG = f"the line is longer than {MAX_RECORD_BYTES:,} characters"  # a record that is one overlong line
MAX_LISTED = 1000  # problems kept with their text (all are counted)
CHUNK = 1024 * 1024
MULTI_VALUE = ":::"  # Google Contacts joins several numbers of one label in one cell
DELIMITERS = ",;\t|"
FIELDS = ("name", "first", "last", "phone", "mobile", "company", "email", "url")
ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "nom", "fullname", "kontakt", "contact", "kontaktname", "displayname", "anzeigename"),
    "first": ("firstname", "first", "vorname", "prenom", "givenname"),
    "last": ("lastname", "last", "nachname", "familienname", "surname", "nomdefamille", "familyname"),
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
        "primaryphone",
        "homephone",
        "companymainphone",
        "otherphone",
        "carphone",
        "telefongeschaftlich",
        "telefonprivat",
        "telefonfirma",
        "haupttelefon",
        "telephonebureau",
        "telephonedomicile",
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
        "telmobile",
        "telephonemobile",
    ),
    "company": (
        "company",
        "firma",
        "societe",
        "organisation",
        "organization",
        "organizationname",
        "unternehmen",
        "entreprise",
    ),
    "email": (
        "email",
        "mail",
        "emailadresse",
        "courriel",
        "adresseemail",
        "emailaddress",
        "adressedemessagerie",
    ),
    "url": ("url", "website", "webseite", "link", "lien", "siteweb", "homepage", "crmlink", "webpage"),
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
    external: str | None = None  # the value of the --key column


class Problems:
    """The problems of one import, by line: every one counted, the first MAX_LISTED kept."""

    def __init__(self) -> None:
        self.listed: list[str] = []
        self.count = self.skipped = 0

    def add(self, line: int, text: str, *, skipped: bool = False) -> None:
        self.count += 1
        self.skipped += skipped
        if len(self.listed) < MAX_LISTED:
            self.listed.append(f"line {line}: {'skipped, ' if skipped else ''}{text}")


class ContactFile(NamedTuple):
    """A contacts file being read: its rows come as they are read, problems are added meanwhile."""

    rows: Iterator[ContactRow]
    problems: Problems
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
            shown = _shown(header)
            raise ConfigError(f"--map names column {column!r}, which the header {shown} does not have")
        found[folded.index(column)] = field
    for index, name in enumerate(folded):
        if index in found:
            continue
        if key is not None and name == fold(key):
            found[index] = "key"
            continue
        alias = _alias(name)
        if alias is not None:
            found[index] = alias
    fields = list(found.values())
    if "first" in fields and "name" in fields and "last" not in fields:  # French "Prénom" + "Nom"
        found = {index: "last" if field == "name" else field for index, field in found.items()}
        fields = list(found.values())
    has_name = any(field in fields for field in ("name", "first", "last", "company"))
    has_phone = "phone" in fields or "mobile" in fields
    if not has_name or not has_phone:
        missing = " and ".join(what for what, ok in (("a name", has_name), ("a phone", has_phone)) if not ok)
        raise ConfigError(
            f"no column for {missing} in the header {_shown(header)}; name them (e.g. Name, Telefon) "
            "or map them with --map phone=<column>,name=<column>"
        )
    if key is not None and fold(key) not in folded:
        raise ConfigError(f"--key {key!r} is not a column of the header {_shown(header)}")
    return found


def _alias(folded: str) -> str | None:
    """Our field for a folded header: an alias, or one once numbered and "value" are taken off.

    Outlook numbers repeated columns (``E-mail 2 Address``, ``Business Phone 2``) and
    Google names them ``Phone 1 - Value`` next to ``Phone 1 - Label``.
    """
    bare = re.sub(r"\d+", "", folded)
    for name in (folded, bare, bare.removesuffix("value")):
        alias = next((known for known, aliases in ALIASES.items() if name in aliases), None)
        if alias is not None:
            return alias
    return None


def _shown(header: list[str], most: int = 12) -> str:
    """A header as quoted in an error: its first columns, so one line stays one line."""
    if len(header) <= most:
        return repr(header)
    return "[" + ", ".join(repr(column) for column in header[:most]) + f", ... ({len(header)} columns)]"


def detect_encoding(path: Path, file: IO[bytes], encoding: str | None) -> str:
    """The override (checked), else by BOM, else UTF-8 if every byte is, else cp1252; file back at 0.

    The UTF-8 check reads the file once in chunks: nothing of it is kept.
    """
    used = encoding
    if used is None:
        start = file.read(3)
        if start.startswith(b"\xef\xbb\xbf"):
            used = "utf-8-sig"
        elif start.startswith((b"\xff\xfe", b"\xfe\xff")):
            used = "utf-16"
        file.seek(0)
    try:
        decoder = codecs.getincrementaldecoder(used or "utf-8")()
    except LookupError as error:
        raise ConfigError(f"--encoding {encoding!r} cannot read the file: {error}") from None
    if used in ("utf-8-sig", "utf-16"):
        return used  # a BOM says so: a stray bad byte is replaced, as before
    try:
        while chunk := file.read(CHUNK):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        if encoding:
            raise ConfigError(f"--encoding {encoding!r} cannot read the file: {error}") from None
        used = "cp1252"
    finally:
        file.seek(0)
    return used or "utf-8"


def sniff_delimiter(header_line: str) -> str:
    """The delimiter the header line uses most (comma when it has none of them)."""
    counts = {delimiter: header_line.count(delimiter) for delimiter in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _unfinished(record: str, delimiter: str) -> bool:
    """True while a quoted field is still open at the end of record (csv's own reading)."""
    if '"' not in record:
        return False  # the usual row: nothing to open a field with
    try:
        list(csv.reader(io.StringIO(record), delimiter=delimiter, strict=True))
    except csv.Error as error:
        return "unexpected end of data" in str(error)
    return False


def lines_of(text: IO[str]) -> Iterator[str]:
    """The lines of a text stream without their ends; a line over MAX_RECORD_BYTES is cut there.

    What follows the cut is read and dropped, so one endless line costs no memory;
    the cut line is longer than any record may be, so it is reported broken.
    """
    while line := text.readline(MAX_RECORD_BYTES + 1):
        if len(line) > MAX_RECORD_BYTES and not line.endswith("\n"):
            while (rest := text.readline(MAX_RECORD_BYTES)) and not rest.endswith("\n"):
                pass
        yield line.removesuffix("\n")


def records(lines: Iterable[str], delimiter: str) -> Iterator[tuple[int, str | None]]:
    """(first line number, record text) for each record; (line, None) for a broken one.

    A line over MAX_RECORD_BYTES on its own is broken too (:data:`TOO_LONG` marks it).

    A record continues over line breaks only inside a quoted field; one that would
    span more than MAX_RECORD_LINES lines or MAX_RECORD_BYTES is a stray quote: its
    first line is reported broken and reading restarts on the line after it. At most
    MAX_RECORD_LINES lines are held at a time.
    """
    source = iter(lines)
    ahead: deque[str] = deque()

    def fill(count: int) -> bool:
        while len(ahead) < count:
            line = next(source, None)
            if line is None:
                return False
            ahead.append(line)
        return True

    number = 1
    while fill(1):
        record, used = ahead[0], 1
        while _unfinished(record, delimiter) and used < MAX_RECORD_LINES and fill(used + 1):
            record += "\n" + ahead[used]
            used += 1
        if _unfinished(record, delimiter) or len(record) > MAX_RECORD_BYTES:
            yield number, TOO_LONG if len(ahead[0]) > MAX_RECORD_BYTES else None
            ahead.popleft()
            number += 1
            continue
        yield number, record
        for _ in range(used):
            ahead.popleft()
        number += used


class Budget:
    """Counts the rows and cells of one file and refuses the one over a limit (MAX_ROWS, MAX_CELLS)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = self.cells = 0

    def take(self, cells: int, *, row: bool = True) -> None:
        """Count one row of cells; ConfigError naming the file and the limit past one."""
        self.rows += row
        self.cells += cells
        if self.rows > MAX_ROWS:
            raise ConfigError(
                f"contacts file {str(self.path)!r} has more than {MAX_ROWS:,} rows, the limit of one import; "
                "split it into smaller files (rows with the same key update each other across files)"
            )
        if self.cells > MAX_CELLS:
            raise ConfigError(
                f"contacts file {str(self.path)!r} has more than {MAX_CELLS:,} cells, the limit of one "
                "import; remove the columns the import does not need, or split it into smaller files"
            )


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:,.1f} MiB"


def read_csv(
    path: Path,
    *,
    encoding: str | None,
    delimiter: str | None,
    mapping: list[tuple[str, str]],
    key: str | None,
) -> ContactFile:
    """Open a CSV file and read its header; its rows are read as they are taken."""
    try:
        file = path.open("rb")
        size = os.fstat(file.fileno()).st_size
    except OSError as error:
        raise ConfigError(f"contacts file {str(path)!r} cannot be read: {error.strerror}") from None
    if size > MAX_CSV_BYTES:
        file.close()
        raise ConfigError(
            f"contacts file {str(path)!r} is {_mib(size)}, over the {_mib(MAX_CSV_BYTES)} limit of a CSV "
            "import; split it into smaller files"
        )
    try:
        used = detect_encoding(path, file, encoding)
        text = io.TextIOWrapper(file, encoding=used, errors="replace", newline=None)
        lines = lines_of(text)
        first_line = next((line for line in lines if line.strip()), None)
        if first_line is None:
            raise ConfigError(f"contacts file {str(path)!r} is empty; the first line must be the header")
        delimiter = delimiter or sniff_delimiter(first_line)
        text.seek(0)
        all_records = records(lines_of(text), delimiter)
        header_record = next(
            (r for _, r in all_records if r not in (None, TOO_LONG) and r.strip()), first_line
        )
        header = next(csv.reader(io.StringIO(header_record), delimiter=delimiter))
        found = columns_of(header, mapping, key)
    except BaseException:
        file.close()
        raise
    problems = Problems()
    return ContactFile(
        _csv_rows(path, text, all_records, delimiter, header, found, problems),
        problems,
        header,
        used,
        delimiter,
    )


def _csv_rows(
    path: Path,
    text: IO[str],
    all_records: Iterator[tuple[int, str | None]],
    delimiter: str,
    header: list[str],
    found: dict[int, str],
    problems: Problems,
) -> Iterator[ContactRow]:
    budget = Budget(path)
    budget.take(len(header), row=False)
    with text:
        for line, record in all_records:
            if record is None or record is TOO_LONG:
                budget.take(0)
                why = 'a quote is not closed (a stray " in the row?)' if record is None else TOO_LONG
                problems.add(line, why, skipped=True)
                continue
            if not record.strip():
                continue
            try:
                cells = next(csv.reader(io.StringIO(record), delimiter=delimiter))
            except (csv.Error, StopIteration) as error:
                budget.take(0)
                problems.add(line, f"not a CSV row ({error})", skipped=True)
                continue
            budget.take(len(cells))
            yield _row(line, header, cells, found)


def check_workbook(path: Path, file: IO[bytes]) -> None:
    """Refuse a workbook whose parts would expand past MAX_XLSX_BYTES, before any is inflated.

    The sizes come from the zip's central directory; zipfile stops every part at its
    stated size (and fails its CRC), so a part that lies about its size cannot grow.
    """
    try:
        with zipfile.ZipFile(file) as archive:
            expanded = sum(part.file_size for part in archive.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as error:
        raise ConfigError(f"contacts file {str(path)!r} is not an .xlsx workbook: {error}") from None
    if expanded > MAX_XLSX_BYTES:
        raise ConfigError(
            f"contacts file {str(path)!r} expands to {_mib(expanded)}, over the {_mib(MAX_XLSX_BYTES)} limit "
            "of a workbook import; save its first sheet alone, or as CSV, or split it"
        )
    file.seek(0)


def read_xlsx(path: Path, *, mapping: list[tuple[str, str]], key: str | None) -> ContactFile:
    """Open a workbook (refused if it would expand too far) and read its header; rows as taken."""
    try:
        import openpyxl
    except ImportError:
        raise ConfigError(
            "reading .xlsx files needs openpyxl: pip install 'tcx-bridge[xlsx]' (or save the sheet as CSV)"
        ) from None
    try:
        file = path.open("rb")
    except OSError as error:
        raise ConfigError(f"contacts file {str(path)!r} cannot be read: {error.strerror}") from None
    try:
        check_workbook(path, file)
        try:
            workbook = openpyxl.load_workbook(file, read_only=True, data_only=True)
        except Exception as error:  # noqa: BLE001  # openpyxl raises many kinds for a file that is no workbook
            raise ConfigError(f"contacts file {str(path)!r} is not an .xlsx workbook: {error}") from None
    except BaseException:
        file.close()
        raise
    sheet = workbook.worksheets[0]
    sheet.reset_dimensions()  # a stated dimension (A1:XFD1048576) would pad every row to it
    budget = Budget(path)
    lines = _sheet_lines(path, sheet, budget)
    try:
        first = next(lines, None)
        if first is None:
            raise ConfigError(
                f"contacts file {str(path)!r} has an empty first sheet; the first row must be the header"
            )
        header = first[1]
        found = columns_of(header, mapping, key)
    except BaseException:
        workbook.close()
        file.close()
        raise
    return ContactFile(_xlsx_rows(workbook, file, lines, header, found), Problems(), header, "xlsx", "")


def _sheet_lines(path: Path, sheet: Any, budget: Budget) -> Iterator[tuple[int, list[str]]]:
    """(line, cells as text) of each row that has a value; rows counted, cut to the first's width."""
    width: int | None = None
    try:
        for line, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            if not values:
                continue  # a row the sheet leaves out
            budget.take(len(values), row=width is not None)
            cells = ["" if value is None else _cell_text(value) for value in values[:width]]
            if any(cells):
                width = width or len(cells)
                yield line, cells
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        SyntaxError,
        ValueError,
    ) as error:  # a part not what it says
        raise ConfigError(f"contacts file {str(path)!r} is not an .xlsx workbook: {error}") from None


def _xlsx_rows(
    workbook: Any,
    file: IO[bytes],
    lines: Iterator[tuple[int, list[str]]],
    header: list[str],
    found: dict[int, str],
) -> Iterator[ContactRow]:
    try:
        for line, cells in lines:
            yield _row(line, header, cells, found)
    finally:
        workbook.close()
        file.close()


def _cell_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a phone number typed as a number
    return str(value)


def _row(line: int, header: list[str], cells: list[str], found: dict[int, str]) -> ContactRow:
    values: dict[str, list[str]] = {}
    others: dict[str, str] = {}
    external = None
    for index, cell in enumerate(cells):
        cell = unneutralise_formula(cell.strip())  # a cell of our own CSV export reads back as it was
        if not cell:
            continue
        field = found.get(index)
        if field is None or field == "key":
            external = cell if field == "key" else external
            if index < len(header) and header[index].strip():
                others[header[index].strip()] = cell
            continue
        if MULTI_VALUE in cell and field in ("phone", "mobile", "email", "url"):
            parts = (part.strip() for part in cell.split(MULTI_VALUE))
            values.setdefault(field, []).extend(part for part in parts if part)
        else:
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
        external=external,
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
