"""Read a CSV contacts file of any usual dialect as a stream of rows.

* encoding: UTF-8 with or without BOM, UTF-16 with BOM (Excel's "Unicode text"),
  else cp1252 (Windows Notepad and older Excel); ``encoding`` overrides;
* delimiter: ``,`` ``;`` tab or ``|``, detected from the header line; ``delimiter`` overrides;
* a broken row (a stray quote that would swallow what follows, a field spanning
  more than ``MAX_RECORD_LINES`` lines or ``MAX_RECORD_BYTES``) is reported with its
  line number and skipped, and reading goes on with the next line.

The header is read at once; the rows as the importer takes them, so memory stays
flat whatever the file's size: the UTF-8 check is one pass in chunks, and a line
is read at most ``MAX_RECORD_BYTES`` at a time.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from bridge.errors import ConfigError
from consumers.crm.contact_files.columns import columns_of
from consumers.crm.contact_files.limits import Budget, check_csv_size
from consumers.crm.contact_files.rows import ContactFile, ContactRow, Problems, row_of

MAX_RECORD_LINES = 5
MAX_RECORD_BYTES = 4096
TOO_LONG = f"the line is longer than {MAX_RECORD_BYTES:,} characters"  # a record that is one overlong line
CHUNK = 1024 * 1024
DELIMITERS = ",;\t|"


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
    try:
        check_csv_size(path, size)
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
    """The rows after the header as contacts; a broken record is a problem, skipped; rows counted."""
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
            yield row_of(line, header, cells, found)
