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

One job per module: ``delimited`` (CSV encodings, dialects, broken records),
``workbook`` (.xlsx), ``columns`` (header -> our fields, ``--map``, ``--key``),
``rows`` (a row's cells -> :class:`ContactRow`, the problems by line), ``limits``
(the size guards); this module picks the reader by the file's suffix.
"""

from __future__ import annotations

from pathlib import Path

from bridge.errors import ConfigError
from consumers.crm.contact_files.columns import parse_mapping
from consumers.crm.contact_files.delimited import read_csv
from consumers.crm.contact_files.rows import ContactFile, ContactRow, Problems
from consumers.crm.contact_files.workbook import read_xlsx

__all__ = ["ContactFile", "ContactRow", "Problems", "read_contacts"]


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
