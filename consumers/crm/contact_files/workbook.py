"""Read an ``.xlsx`` contacts workbook: the first sheet, its first non-empty row the header.

openpyxl (the ``xlsx`` extra) reads it read-only: rows are streamed and cut to the
header's width. The workbook is refused before openpyxl opens it if its parts
would expand too far (limits.check_workbook), and its rows and cells are counted
while reading (limits.Budget).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from bridge.errors import ConfigError
from consumers.crm.contact_files.columns import columns_of
from consumers.crm.contact_files.limits import Budget, check_workbook
from consumers.crm.contact_files.rows import ContactFile, ContactRow, Problems, row_of


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
    """The rows after the header as contacts; the workbook and its file closed when they end."""
    try:
        for line, cells in lines:
            yield row_of(line, header, cells, found)
    finally:
        workbook.close()
        file.close()


def _cell_text(value: object) -> str:
    """A cell's value as text, as it reads on the sheet."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a phone number typed as a number
    return str(value)
