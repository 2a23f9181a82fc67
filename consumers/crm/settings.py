"""The CRM consumer's settings: the HTTP contact lookup and call journal.

Registered in pyproject.toml (``tcx_bridge.settings``); read with ``CRM.of(settings)``.
Their names are a public contract (TOML keys, ``TCX_BRIDGE_*`` variables): never rename one.
"""

from __future__ import annotations

import msgspec

from bridge.keys import Key, const
from bridge.sections import Section
from bridge.values import FieldMap, at_least, parse_crm_fields, parse_url_template


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
