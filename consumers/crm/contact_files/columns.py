"""Which of our fields each header column is: headers from English, German and French exports.

Headers are matched case- and accent-insensitively (:func:`fold`) against
:data:`ALIASES`, Outlook's and Google's export headers included (``E-mail 2
Address``, ``Phone 1 - Value``: digits and a trailing "value" are ignored);
``mapping`` (``--map phone=Geschäft,mobile=Natel``) names the rest, and ``key``
(``--key``) the column that identifies a contact across imports. A header
without a name (or company) column and a phone column is refused before any row
is read.
"""

from __future__ import annotations

import re
import unicodedata

from bridge.errors import ConfigError

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
