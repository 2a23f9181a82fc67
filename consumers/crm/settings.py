"""The CRM consumer's settings: the HTTP contact lookup and call journal.

Registered in pyproject.toml (``tcx_bridge.settings``); read with ``CRM.of(settings)``.
Their names are a public contract (TOML keys, ``TCX_BRIDGE_*`` variables): never rename one.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bridge.errors import ConfigError
from bridge.keys import Key, const
from bridge.sections import Section
from bridge.values import at_least, parse_text, parse_url_template


class FieldMap(msgspec.Struct, frozen=True):
    """How a CRM's JSON maps to our contact fields: (field, dotted path) pairs; ``str()`` as given."""

    paths: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return ",".join(f"{field}={path}" for field, path in self.paths)


def parse_field_map(text: str, name: str = "crm_fields") -> dict[str, str]:
    """``name=fullName,company=org.name`` -> {"name": "fullName", "company": "org.name"}."""
    fields = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        ours, _, theirs = pair.partition("=")
        if ours.strip() not in ("name", "company", "email", "url") or not theirs.strip():
            raise ConfigError(
                f"{name}: {pair!r} is not field=path with field one of name, company, email, url"
            )
        fields[ours.strip()] = theirs.strip()
    return fields


def parse_crm_fields(name: str, value: Any) -> FieldMap:
    return FieldMap(tuple(parse_field_map(parse_text(name, value), name).items()))


class CrmOptions(msgspec.Struct, frozen=True, kw_only=True):
    crm_lookup_url: str | None
    crm_fields: FieldMap
    crm_journal_url: str | None
    crm_timeout: float


CRM = Section(
    "crm",
    (
        Key(
            "crm_lookup_url",
            const(None),
            parse_url_template,
            "HTTP contact lookup, e.g. https://crm.example.com/api/contacts?phone={e164}",
        ),
        Key(
            "crm_fields",
            const(parse_crm_fields("crm_fields", "name=name,company=company,email=email,url=url")),
            parse_crm_fields,
            "how the HTTP lookup's JSON maps to contact fields (dotted paths)",
        ),
        Key(
            "crm_journal_url", const(None), parse_url_template, "HTTP endpoint the call journal is POSTed to"
        ),
        Key("crm_timeout", const(5.0), at_least(float, 0.1), "seconds an HTTP CRM request may take"),
    ),
    CrmOptions,
)
