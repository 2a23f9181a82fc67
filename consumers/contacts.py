"""Contact lookup backends for the CRM consumer: SQLite (embedded default) and HTTP.

SQLite: ``<data_dir>/contacts.sqlite3``, filled by ``tcx-bridge contacts import FILE.csv``
(header row; ``name`` and ``phone`` required; ``company``, ``email``, ``url``
optional; other columns kept as JSON). Lookup is one indexed query on the E.164
number.

HTTP: ``crm_lookup_url`` is a template (``{e164}``, ``{number}``) answered with a
JSON object, or a list whose first item is the contact; ``crm_fields`` maps our
fields to dotted paths in it. Timeouts and retries are bounded; a CRM that stays
down raises, so the runtime retries the event later instead of dropping it.
"""

from __future__ import annotations

import csv
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.events import Contact
from consumers.numbers import normalise
from consumers.store import open_database

CONTACTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS contacts (
    id INTEGER PRIMARY KEY,
    e164 TEXT NOT NULL,
    phone TEXT NOT NULL,
    name TEXT NOT NULL,
    company TEXT,
    email TEXT,
    url TEXT,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS contacts_e164 ON contacts (e164);
"""
KNOWN_COLUMNS = ("name", "phone", "company", "email", "url")
HTTP_ATTEMPTS = 3


class ContactLookup(Protocol):
    def lookup(self, e164: str, raw: str | None) -> Contact | None: ...


class SqliteContacts:
    """The embedded contacts store."""

    def __init__(self, path: Path) -> None:
        self.connection = open_database(path, CONTACTS_SCHEMA)

    def lookup(self, e164: str, raw: str | None = None) -> Contact | None:
        row = self.connection.execute(
            "SELECT name, company, email, url FROM contacts WHERE e164 = ? ORDER BY id LIMIT 1", (e164,)
        ).fetchone()
        if row is None:
            return None
        return Contact(name=row["name"], company=row["company"], email=row["email"], url=row["url"])

    def count(self) -> int:
        return int(self.connection.execute("SELECT count(*) FROM contacts").fetchone()[0])

    def import_csv(self, path: Path, region: str, *, replace: bool = False) -> tuple[int, list[str]]:
        """Import a CSV file; return (imported, problems). Rows whose phone is unusable are skipped."""
        problems: list[str] = []
        try:
            handle = path.open(newline="", encoding="utf-8-sig")
        except OSError as error:
            raise ConfigError(f"contacts file {str(path)!r} cannot be read: {error.strerror}") from None
        with handle:
            reader = csv.DictReader(handle)
            header = [name.strip().lower() for name in (reader.fieldnames or [])]
            missing = [column for column in ("name", "phone") if column not in header]
            if missing:
                raise ConfigError(
                    f"contacts file {str(path)!r} has no {' or '.join(repr(m) for m in missing)} column; "
                    f"its header is {header!r}; name and phone are required"
                )
            reader.fieldnames = header
            rows = self._rows(reader, region, problems)
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                if replace:
                    self.connection.execute("DELETE FROM contacts")
                cursor = self.connection.executemany(
                    "INSERT INTO contacts (e164, phone, name, company, email, url, extra) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                imported = cursor.rowcount
                self.connection.execute("COMMIT")
            except BaseException:
                self.connection.execute("ROLLBACK")
                raise
        return imported, problems

    @staticmethod
    def _rows(reader: csv.DictReader[str], region: str, problems: list[str]) -> Iterator[tuple[Any, ...]]:
        for line, row in enumerate(reader, start=2):
            name = (row.get("name") or "").strip()
            phone = (row.get("phone") or "").strip()
            number = normalise(phone, region)
            if not name or number.e164 is None:
                problems.append(
                    f"line {line}: skipped, {'no name' if not name else f'phone {phone!r} is not a number'}"
                )
                continue
            extra = {key: value for key, value in row.items() if key not in KNOWN_COLUMNS and key and value}
            yield (
                number.e164,
                phone,
                name,
                _blank(row.get("company")),
                _blank(row.get("email")),
                _blank(row.get("url")),
                json.dumps(extra) if extra else None,
            )


def _blank(value: str | None) -> str | None:
    return (value or "").strip() or None


class HttpContacts:
    """A CRM's HTTP lookup."""

    def __init__(self, settings: Settings) -> None:
        assert settings.crm_lookup_url is not None
        self.template = settings.crm_lookup_url
        self.timeout = settings.crm_timeout
        self.fields = parse_field_map(settings.crm_fields)

    def lookup(self, e164: str, raw: str | None = None) -> Contact | None:
        url = self.template.format(e164=urllib.parse.quote(e164), number=urllib.parse.quote(raw or e164))
        found = request_json("GET", url, None, self.timeout)
        if isinstance(found, list):
            found = found[0] if found else None
        if not isinstance(found, dict):
            return None
        values = {field: _dig(found, path) for field, path in self.fields.items()}
        if not values.get("name"):
            return None
        return Contact(
            name=str(values["name"]),
            company=_text(values.get("company")),
            email=_text(values.get("email")),
            url=_text(values.get("url")),
        )


def parse_field_map(text: str) -> dict[str, str]:
    """``name=fullName,company=org.name`` -> {"name": "fullName", "company": "org.name"}."""
    fields = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        ours, _, theirs = pair.partition("=")
        if ours.strip() not in ("name", "company", "email", "url") or not theirs.strip():
            raise ConfigError(
                f"crm_fields: {pair!r} is not field=path with field one of name, company, email, url"
            )
        fields[ours.strip()] = theirs.strip()
    return fields


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
    import tenacity

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

    for attempt in tenacity.Retrying(
        stop=tenacity.stop_after_attempt(HTTP_ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=0.2, max=2),
        retry=tenacity.retry_if_exception(retriable),
        reraise=True,
    ):
        with attempt:
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    payload = response.read()
            except urllib.error.HTTPError as error:
                if error.code == 404:
                    return None
                raise
    return json.loads(payload) if payload.strip() else None
