"""What a reader hands the importer: each row as a :class:`ContactRow`, the problems by line.

A row's cells become one contact here, the same for CSV and workbooks
(:func:`row_of`); a cell of our own CSV export (a formula neutralised with a
quote) reads back as it was written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from bridge.text import unneutralise_formula

MAX_LISTED = 1000  # problems kept with their text (all are counted)
MULTI_VALUE = ":::"  # Google Contacts joins several numbers of one label in one cell


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


def row_of(line: int, header: list[str], cells: list[str], found: dict[int, str]) -> ContactRow:
    """The contact in one row's cells, by the fields found for its columns (columns_of).

    Every phone and mobile column is a number of the contact (Google's ``a ::: b``
    cells are split); first and last name columns are joined into the name; the
    other columns are kept by their header; the key column gives ``external``.
    """
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
