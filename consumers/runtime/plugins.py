"""Consumers are plugins: found through the entry-point group ``tcx_bridge.consumers``.

A package registers ``name = "module:Class"`` in that group (the built-in ``crm``
and ``analytics`` are registered the same way, in this project's pyproject.toml);
``tcx-bridge consume NAME`` loads it and runs it on the shared runtime. A plugin
that fails to load is reported with its package and error; the others still work.
See docs/plugins.md for the interface.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import NamedTuple

from bridge.errors import ConfigError
from consumers.runtime.runner import Consumer

GROUP = "tcx_bridge.consumers"


class Plugin(NamedTuple):
    """One registered consumer: its name, where it comes from, and what it does (or why it is broken)."""

    name: str
    package: str
    version: str
    about: str
    error: str | None = None


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=GROUP):
        found.setdefault(point.name, point)  # the first installed wins, as for console scripts
    return found


def _origin(point: EntryPoint) -> tuple[str, str]:
    dist = point.dist
    return (dist.name, dist.version) if dist is not None else ("?", "?")


def load(name: str) -> type[Consumer]:
    """The consumer class registered as name; ConfigError naming the package when it cannot be loaded."""
    points = _entry_points()
    if name not in points:
        known = ", ".join(sorted(points)) or "none installed"
        raise ConfigError(f"{name!r} is not a consumer; installed: {known} (tcx-bridge consume --list)")
    point = points[name]
    package, version = _origin(point)
    try:
        loaded = point.load()
    except Exception as error:  # noqa: BLE001  # any import failure of a third-party package
        raise ConfigError(
            f"consumer {name!r} from {package} {version} cannot be loaded: {type(error).__name__}: {error}"
        ) from None
    if not (isinstance(loaded, type) and issubclass(loaded, Consumer)):
        raise ConfigError(
            f"consumer {name!r} from {package} {version} is {point.value!r}, not a consumers.runtime.Consumer"
        )
    return loaded


def installed() -> list[Plugin]:
    """Every registered consumer, loaded to read its description; a broken one carries its error."""
    plugins = []
    for name, point in sorted(_entry_points().items()):
        package, version = _origin(point)
        try:
            cls = load(name)
        except ConfigError as error:
            plugins.append(Plugin(name, package, version, "", str(error)))
            continue
        about = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        plugins.append(Plugin(name, package, version, about))
    return plugins


def consumer_classes() -> list[type[Consumer]]:
    """The classes of every consumer that loads (for topology declare and show)."""
    return [load(plugin.name) for plugin in installed() if plugin.error is None]
