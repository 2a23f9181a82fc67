"""The size guards of one contacts import: each a ConfigError naming the file and the limit.

* a CSV file over ``MAX_CSV_BYTES``, from its size before reading (:func:`check_csv_size`);
* a workbook whose parts expand to more than ``MAX_XLSX_BYTES``, from the zip
  directory before openpyxl opens it (:func:`check_workbook`; zipfile stops every
  part at its stated size, so a zip bomb is refused before it is inflated);
* more than ``MAX_ROWS`` rows or ``MAX_CELLS`` cells, counted while reading (:class:`Budget`).

The readers look the limits up here when they check them, so a test may patch them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO

from bridge.errors import ConfigError

MAX_ROWS = 1_000_000  # contact rows in one file
MAX_CELLS = 20_000_000  # cells in one file, empty ones within a row included
MAX_CSV_BYTES = 256 * 1024 * 1024  # a CSV file as stored (it is read as a stream)
MAX_XLSX_BYTES = 64 * 1024 * 1024  # a workbook's parts, uncompressed (openpyxl holds its strings)


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


def check_csv_size(path: Path, size: int) -> None:
    """Refuse a CSV file of size bytes over MAX_CSV_BYTES, before it is read."""
    if size > MAX_CSV_BYTES:
        raise ConfigError(
            f"contacts file {str(path)!r} is {_mib(size)}, over the {_mib(MAX_CSV_BYTES)} limit of a CSV "
            "import; split it into smaller files"
        )


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
