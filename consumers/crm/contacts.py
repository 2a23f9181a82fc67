"""Contact lookup backends for the CRM consumer: the store (SQLite or PostgreSQL) and HTTP.

The store: ``<data_dir>/contacts.sqlite3``, or table ``contacts`` in the PostgreSQL
database of ``store_url``, filled by ``tcx-bridge contacts import FILE``
(CSV of any usual dialect or .xlsx, read by consumers.crm.contact_files; other columns
kept as JSON). One row per number of a contact, all with the contact's ``key`` (an
external id column named by ``--key``, else its first normalised number): importing
again replaces the rows of the same key. Rows of one file with the same key are one
contact, merged field by field (every number kept, a later non-empty value wins,
each merge reported with both lines). A row without a person's name is named by its
company. A row the screen pop could not carry (a name, company or email over
``MAX_NAME`` characters, a url over ``MAX_URL``: bridge.events' own limits) is
refused with its line. Lookup is one indexed query on the E.164 number and returns
the newest row.

HTTP: ``crm_lookup_url`` is a template (``{e164}``, ``{number}``) answered with a
JSON object, or a list whose first item is the contact; ``crm_fields`` maps our
fields to dotted paths in it. Timeouts and retries are bounded; a CRM that stays
down raises, so the runtime retries the event later instead of dropping it.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from bridge.config import Settings
from bridge.errors import HandlerError
from bridge.events import MAX_NAME, MAX_URL, Contact
from bridge.redact import redact_text, redact_url
from bridge.retry import call_with_retries
from consumers.crm.settings import CRM
from consumers.numbers import check_region, normalise
from consumers.store.core import Store, open_sqlite, open_store

if TYPE_CHECKING:
    from consumers.crm.contact_files import ContactRow

CONTACT_COLUMNS = ("key", "phone", "e164", "name", "company", "email", "url", "extra")
HTTP_ATTEMPTS = 3
logger = logging.getLogger(__name__)
INSERT = (
    f"INSERT INTO contacts ({', '.join(CONTACT_COLUMNS)}) VALUES ({', '.join('?' * len(CONTACT_COLUMNS))})"
)
DELETE_KEY = "DELETE FROM contacts WHERE key = ?"
DELETE_KEY_RETURNING = f"{DELETE_KEY} RETURNING id, {', '.join(CONTACT_COLUMNS)}"


class ContactLookup(Protocol):
    def lookup(self, e164: str, raw: str | None) -> Contact | None: ...


class ImportResult(NamedTuple):
    """What an import did: contacts new and updated, rows merged into an earlier one, rows skipped."""

    imported: int
    updated: int
    skipped: int
    problems: list[str]  # the first MAX_LISTED, with their lines
    merged: int = 0
    unlisted: int = 0  # problems beyond those


@dataclass
class MergedContact:
    """One contact as written: a row of a file, or the stored rows of its key with a later row merged in."""

    key: str
    name: str
    company: str | None
    email: str | None
    url: str | None
    numbers: dict[str, str]  # e164 -> the number as written, in file order
    columns: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_row(cls, key: str, row: ContactRow, numbers: dict[str, str]) -> MergedContact:
        return cls(key, row.name, row.company, row.email, row.url, numbers, dict(row.columns))

    @classmethod
    def of_stored(cls, key: str, stored: list[Any]) -> MergedContact:
        """The contact the rows of one key make (each row: one of its numbers)."""
        stored = sorted(stored, key=lambda row: row["id"])
        first = stored[0]
        extra = first["extra"]
        columns = json.loads(extra) if isinstance(extra, str) else (extra or {})  # PostgreSQL: parsed jsonb
        return cls(
            key,
            first["name"],
            first["company"],
            first["email"],
            first["url"],
            {row["e164"]: row["phone"] for row in stored},
            columns,
        )

    def merge(self, row: ContactRow, numbers: dict[str, str], first: int) -> str:
        """Take in a later row of the same key (first seen on line first), field by field; what to report."""
        changes = []
        for name in ("name", "company", "email", "url"):
            before, after = getattr(self, name), getattr(row, name)
            if after and before and after != before:
                changes.append(f"its {name} {_cut(after)!r} replaces {_cut(before)!r}")
            if after:
                setattr(self, name, after)
        added = [raw for e164, raw in numbers.items() if e164 not in self.numbers]
        if added:
            changes.append(f"number(s) {', '.join(repr(raw) for raw in added)} added")
        for e164, raw in numbers.items():
            self.numbers.setdefault(e164, raw)
        self.columns = {**self.columns, **row.columns}
        merged = f"merged into line {first} (same key {self.key!r})"
        return merged + "".join(f"; {change}" for change in changes)

    def rows(self) -> list[tuple[Any, ...]]:
        """Its rows of the contacts table, one per number; without a person's name, named by its company."""
        extra = json.dumps(self.columns) if self.columns else None
        name = self.name or self.company
        return [
            (self.key, raw, e164, name, self.company, self.email, self.url, extra)
            for e164, raw in self.numbers.items()
        ]


class StoreContacts:
    """The contacts table of a store (SQLite contacts.sqlite3, or PostgreSQL)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def close(self) -> None:
        self.store.close()

    def lookup(self, e164: str, raw: str | None = None) -> Contact | None:
        row = self.store.execute(
            "SELECT name, company, email, url FROM contacts WHERE e164 = ? ORDER BY id DESC LIMIT 1", (e164,)
        ).fetchone()
        if row is None:
            return None
        return pop_contact(row["name"], row["company"], row["email"], row["url"])

    def count(self) -> int:
        return int(self.store.execute("SELECT count(DISTINCT key) AS n FROM contacts").fetchone()["n"])

    def rows(self) -> list[dict[str, Any]]:
        """Every stored number with its contact, by contact."""
        cursor = self.store.execute(f"SELECT {', '.join(CONTACT_COLUMNS)} FROM contacts ORDER BY key, id")
        return [
            {**dict(row), "extra": row["extra"] if row["extra"] is None or isinstance(row["extra"], str)
             else json.dumps(row["extra"])}  # PostgreSQL's jsonb comes back parsed
            for row in cursor
        ]  # fmt: skip

    def import_file(
        self,
        path: Path,
        region: str,
        *,
        replace: bool = False,
        key: str | None = None,
        encoding: str | None = None,
        delimiter: str | None = None,
        mapping: str | None = None,
    ) -> ImportResult:
        """Import a contacts file; a contact whose key is stored already is updated."""
        from consumers.crm.contact_files import read_contacts

        check_region(region)
        found = read_contacts(path, encoding=encoding, delimiter=delimiter, mapping=mapping, key=key)
        problems = found.problems
        imported = updated = merged = 0
        db = self.store
        first_line: dict[str, int] = {}  # each key written by this import: the line it came from
        with db.transaction():
            if replace:
                db.execute("DELETE FROM contacts")
            for row in found.rows:
                numbers = [normalise(number, region) for number in row.numbers]
                usable = {n.e164: raw for n, raw in zip(numbers, row.numbers, strict=True) if n.e164}
                refused = _refusal(row, list(usable))
                if refused:
                    problems.add(row.line, refused, skipped=True)
                    continue
                for number in numbers:
                    if number.e164 is None:
                        problems.add(row.line, f"number {number.raw!r} is not a number; the others kept")
                contact_key = row.external or next(iter(usable))
                if contact_key in first_line:  # the same key twice in the file: one contact
                    stored = db.execute(DELETE_KEY_RETURNING, (contact_key,)).fetchall()
                    contact = MergedContact.of_stored(contact_key, stored)
                    problems.add(row.line, contact.merge(row, usable, first_line[contact_key]))
                    merged += 1
                else:
                    first_line[contact_key] = row.line
                    contact = MergedContact.of_row(contact_key, row, usable)
                    replaced = db.execute(DELETE_KEY, (contact_key,)).rowcount
                    updated += bool(replaced)
                    imported += not replaced
                db.executemany(INSERT, contact.rows())
        unlisted = problems.count - len(problems.listed)
        return ImportResult(imported, updated, problems.skipped, problems.listed, merged, unlisted)


def pop_contact(name: str, company: str | None, email: str | None, url: str | None) -> Contact:
    """The contact as a screen pop carries it: a text over MAX_NAME cut, a url over MAX_URL left out.

    The import refuses such contacts; this keeps a pop from being dead-lettered for a
    store filled before it did, or for what an HTTP CRM answers.
    """
    if len(name) > MAX_NAME or len(company or "") > MAX_NAME or len(email or "") > MAX_NAME:
        logger.warning(
            "contact %r: a text over %d characters is cut for the screen pop", _cut(name), MAX_NAME
        )
        name = _cut(name, MAX_NAME)
        company = None if company is None else _cut(company, MAX_NAME)
        email = None if email is None else _cut(email, MAX_NAME)
    if url is not None and len(url) > MAX_URL:
        logger.warning(
            "contact %r: a url over %d characters is left out of the screen pop", _cut(name), MAX_URL
        )
        url = None
    return Contact(name=name, company=company, email=email, url=url)


def _cut(value: str, width: int = 60) -> str:
    """A value as quoted in a report line: at most width characters."""
    return value if len(value) <= width else value[: width - 1] + "…"


def _refusal(row: ContactRow, numbers: list[str]) -> str | None:
    """Why a row cannot be a contact, or None: no name, no number, or more than a screen pop carries."""
    if not row.name and not row.company:
        return "no name (nor company)"
    if not numbers:
        return f"no usable phone number ({', '.join(repr(n) for n in row.numbers) or 'none'})"
    for name, limit in (("name", MAX_NAME), ("company", MAX_NAME), ("email", MAX_NAME), ("url", MAX_URL)):
        value = getattr(row, name)
        if value and len(value) > limit:
            return f"its {name} has {len(value):,} characters, more than a screen pop carries ({limit:,})"
    return None


class SqliteContacts(StoreContacts):
    """The embedded contacts store: a SQLite file."""

    def __init__(self, path: Path) -> None:
        sqlite = open_sqlite(path, "contacts")
        super().__init__(sqlite)
        self.connection = sqlite.connection


def open_contacts(settings: Settings) -> StoreContacts:
    """The contacts of the configured store: contacts.sqlite3 in the data dir, or PostgreSQL."""
    return StoreContacts(open_store(settings, "contacts"))


def _blank(value: str | None) -> str | None:
    return (value or "").strip() or None


class HttpContacts:
    """A CRM's HTTP lookup."""

    def __init__(self, settings: Settings) -> None:
        options = CRM.of(settings)
        assert options.crm_lookup_url is not None
        self.template = options.crm_lookup_url
        self.timeout = options.crm_timeout
        self.fields = options.crm_fields.paths  # parsed at load (consumers.crm.settings)

    def lookup(self, e164: str, raw: str | None = None) -> Contact | None:
        url = self.template.format(e164=urllib.parse.quote(e164), number=urllib.parse.quote(raw or e164))
        found = request_json("GET", url, None, self.timeout)
        if isinstance(found, list):
            found = found[0] if found else None
        if not isinstance(found, dict):
            return None
        values = {field: _dig(found, path) for field, path in self.fields}
        if not values.get("name"):
            return None
        return pop_contact(
            str(values["name"]),
            _text(values.get("company")),
            _text(values.get("email")),
            _text(values.get("url")),
        )


def _dig(document: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def request_json(
    method: str, url: str, body: Any, timeout: float, headers: dict[str, str] | None = None
) -> Any:
    """One HTTP call with bounded retries on timeouts, connection errors and 5xx; 404 means None."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={
            "Accept": "application/json",
            "Content-Type": "application/json",
            **(headers or {}),
        },
    )

    def retriable(error: BaseException) -> bool:
        if isinstance(error, urllib.error.HTTPError):
            return error.code >= 500 or error.code == 429
        return isinstance(error, (urllib.error.URLError, TimeoutError, ConnectionError))

    def fetch(_attempt: int) -> bytes | None:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise
        except ValueError as error:  # http.client.InvalidURL, an unknown scheme: it may quote a password
            raise HandlerError(f"{method} {redact_url(url)}: {redact_text(str(error), url)}") from None

    payload = call_with_retries(fetch, when=retriable, first_wait=0.2, max_wait=2, attempts=HTTP_ATTEMPTS)
    if payload is None:
        return None
    return json.loads(payload) if payload.strip() else None
