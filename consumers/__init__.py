"""Consumers of tcx-bridge events: the shared runtime and one module per consumer.

CONSUMERS names every consumer ``tcx-bridge consume NAME`` can run; each is
imported only when it runs.
"""

CONSUMERS: dict[str, tuple[str, str, str]] = {
    "crm": ("consumers.crm", "Crm", "screen pops by caller id, and the call journal"),
    "analytics": (
        "consumers.analytics",
        "Analytics",
        "one record per call: ring and talk times, missed calls",
    ),
}
