"""The analytics consumer's settings: what counts for the service level (the wallboard shows the same).

Registered in pyproject.toml (``tcx_bridge.settings``); read with ``ANALYTICS.of(settings)``.
Their names are a public contract (TOML keys, ``TCX_BRIDGE_*`` variables): never rename one.
"""

from __future__ import annotations

import msgspec

from bridge.keys import Key, const
from bridge.sections import Section
from bridge.values import at_least


class AnalyticsOptions(msgspec.Struct, frozen=True, kw_only=True):
    service_level_seconds: float


ANALYTICS = Section(
    "analytics",
    (
        Key(
            "service_level_seconds",
            const(20.0),
            at_least(float, 1.0),
            "wallboard: an inbound call answered within this many seconds counts for the service level",
        ),
    ),
    AnalyticsOptions,
)
