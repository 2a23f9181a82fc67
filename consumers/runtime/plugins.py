"""Consumers are plugins: found through the entry-point group ``tcx_bridge.consumers``.

A package registers ``name = "module:Class"`` in that group (the built-in ``crm``
and ``analytics`` are registered the same way, in this project's pyproject.toml);
``tcx-bridge consume NAME`` loads it and runs it on the shared runtime. A plugin
that fails to load is reported with its package and error; the others still work.
See docs/plugins.md for the interface.
"""

from __future__ import annotations

from typing import NamedTuple

from bridge.errors import ConfigError
from bridge.plugins import CONSUMERS, origin, registered
from bridge.plugins import load as load_point
from consumers.runtime.consumer import Consumer

GROUP = CONSUMERS


class Plugin(NamedTuple):
    """One registered consumer: its name, where it comes from, and what it does (or why it is broken)."""

    name: str
    package: str
    version: str
    about: str
    error: str | None = None


def load(name: str) -> type[Consumer]:
    """The consumer class registered as name; ConfigError naming the package when it cannot be loaded."""
    points = registered(GROUP)
    if name not in points:
        known = ", ".join(sorted(points)) or "none installed"
        raise ConfigError(f"{name!r} is not a consumer; installed: {known} (tcx-bridge consume --list)")
    point = points[name]
    loaded = load_point(point, "consumer")
    if not (isinstance(loaded, type) and issubclass(loaded, Consumer)):
        package, version = origin(point)
        raise ConfigError(
            f"consumer {name!r} from {package} {version} is {point.value!r}, not a consumers.runtime.Consumer"
        )
    return loaded


def installed() -> list[Plugin]:
    """Every registered consumer, loaded to read its description; a broken one carries its error."""
    plugins = []
    for name, point in sorted(registered(GROUP).items()):
        package, version = origin(point)
        try:
            cls = load(name)
        except ConfigError as error:
            plugins.append(Plugin(name, package, version, "", str(error)))
            continue
        about = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        plugins.append(Plugin(name, package, version, about))
    return plugins
