"""Contact lookup backends for the CRM consumer: the store (SQLite or PostgreSQL) and HTTP.

The store: ``<data_dir>/contacts.sqlite3``, or table ``contacts`` in the PostgreSQL
database of ``store_url``, filled by ``tcx-bridge contacts import FILE``
(CSV of any usual dialect or .xlsx, read by consumers.contact_files; other columns
kept as JSON). One row per number of a contact, all with the contact's ``key`` (an
external id column named by ``--key``, else its first normalised number): importing
again replaces the rows of the same key. Lookup is one indexed query on the E.164
number and returns the newest row.

HTTP: ``crm_lookup_url`` is a template (``{e164}``, ``{number}``) answered with a
JSON object, or a list whose first item is the contact; ``crm_fields`` maps our
fields to dotted paths in it. Timeouts and retries are bounded; a CRM that stays
down raises, so the runtime retries the event later instead of dropping it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from bridge.config import Settings
from bridge.errors import ConfigError, HandlerError
from bridge.events import Contact
from bridge.redact import redact_text, redact_url
from consumers.numbers import check_region, normalise
from consumers.store import Store, open_sqlite, open_store

CONTACT_COLUMNS = ("key", "phone", "e164", "name", "company", "email", "url", "extra")
HTTP_ATTEMPTS = 3


class ContactLookup(Protocol):
    def lookup(self, e164: str, raw: str | None) -> Contact | None: ...


class ImportResult(NamedTuple):
    imported: int
    updated: int
    skipped: int
    problems: list[str]


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
        return Contact(name=row["name"], company=row["company"], email=row["email"], url=row["url"])

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
        from consumers.contact_files import fold, read_contacts

        check_region(region)
        found = read_contacts(path, encoding=encoding, delimiter=delimiter, mapping=mapping, key=key)
        problems = list(found.problems)
        contacts: dict[str, list[tuple[Any, ...]]] = {}
        for row in found.rows:
            numbers = [normalise(number, region) for number in row.numbers]
            usable = [number for number in numbers if number.e164 is not None]
            if not row.name or not usable:
                written = ", ".join(repr(n) for n in row.numbers) or "none"
                why = "no name" if not row.name else f"no usable phone number ({written})"
                problems.append(f"line {row.line}: skipped, {why}")
                continue
            for number in numbers:
                if number.e164 is None:
                    problems.append(
                        f"line {row.line}: number {number.raw!r} is not a number; the others kept"
                    )
            external = next((v for k, v in row.columns.items() if key and fold(k) == fold(key)), None)
            contact_key = external or usable[0].e164
            extra = json.dumps(row.columns) if row.columns else None
            contacts[str(contact_key)] = [
                (contact_key, number.raw, number.e164, row.name, row.company, row.email, row.url, extra)
                for number in usable
            ]
        skipped = sum(1 for problem in problems if ": skipped" in problem)
        imported = updated = 0
        db = self.store
        with db.transaction():
            if replace:
                db.execute("DELETE FROM contacts")
            for contact_key, rows in contacts.items():
                if db.execute("DELETE FROM contacts WHERE key = ?", (contact_key,)).rowcount:
                    updated += 1
                else:
                    imported += 1
                db.executemany(
                    f"INSERT INTO contacts ({', '.join(CONTACT_COLUMNS)}) VALUES ({', '.join('?' * 8)})", rows
                )
        return ImportResult(imported, updated, skipped, problems)


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
            except ValueError as error:  # http.client.InvalidURL, an unknown scheme: it may quote a password
                raise HandlerError(f"{method} {redact_url(url)}: {redact_text(str(error), url)}") from None
    return json.loads(payload) if payload.strip() else None
