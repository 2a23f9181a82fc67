"""Entry points: how tcx-bridge finds consumers (``tcx_bridge.consumers``) and commands.

Commands register in ``tcx_bridge.commands``, settings sections in ``tcx_bridge.settings``.

Nothing in ``bridge/`` imports ``consumers/`` by name: the installed packages
register what they add (this project's own consumers and commands in its
pyproject.toml, a third-party package in its own), as flask's ``flask.commands``
and pytest's ``pytest11`` do. A registration that fails to load is reported with
its package, version and error; the others still work.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from bridge.errors import ConfigError

CONSUMERS = "tcx_bridge.consumers"
COMMANDS = "tcx_bridge.commands"
SETTINGS = "tcx_bridge.settings"  # settings sections (bridge.sections)


def registered(group: str) -> dict[str, EntryPoint]:
    """The entry points of group by name; the first installed wins, as for console scripts."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=group):
        found.setdefault(point.name, point)
    return found


def origin(point: EntryPoint) -> tuple[str, str]:
    """The package and version that registered point."""
    dist = point.dist
    return (dist.name, dist.version) if dist is not None else ("?", "?")


def load(point: EntryPoint, what: str) -> object:
    """What point names; ConfigError with its package and the error when it cannot be imported."""
    package, version = origin(point)
    try:
        return point.load()
    except Exception as error:  # noqa: BLE001  # any import failure of an installed package
        raise ConfigError(
            f"{what} {point.name!r} from {package} {version} cannot be loaded: "
            f"{type(error).__name__}: {error}"
        ) from None
