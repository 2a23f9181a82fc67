"""Settings declared by the parts that read them: a consumer's keys live in its own room.

A package registers a :class:`Section` in the entry-point group ``tcx_bridge.settings``
(this project's consumers in its pyproject.toml, a third-party package in its own)::

    [project.entry-points."tcx_bridge.settings"]
    crm = "consumers.crm.settings:SECTION"

Its keys are read like the wire's own (:mod:`bridge.keys`): the same TOML file at top
level, ``TCX_BRIDGE_<NAME>`` variables and flags, parsed once at load into the section's
``options`` Struct, and listed by ``tcx-bridge config`` with their sources. The code that
reads them asks ``SECTION.of(settings)``. The notify executable loads no section (it
reads only the wire's keys and never pays for the entry-point scan).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, NamedTuple

from bridge.errors import ConfigError
from bridge.keys import KEYS_BY_NAME, Key
from bridge.plugins import SETTINGS, load, registered

if TYPE_CHECKING:
    from bridge.config import Settings

logger = logging.getLogger(__name__)


class Section(NamedTuple):
    """The settings one part declares: its keys and the Struct they are parsed into.

    options: a frozen msgspec Struct whose fields are the keys' names; built once per
    load from the parsed values.
    """

    name: str
    keys: tuple[Key, ...]
    options: type

    def of(self, settings: Settings) -> Any:
        """This section's options as loaded with settings."""
        try:
            return settings.options[self.name]
        except KeyError:
            raise ConfigError(
                f"settings were loaded without the {self.name!r} section; is its package installed?"
            ) from None


class Registered(NamedTuple):
    """The sections installed packages register, and the ones that could not be loaded."""

    sections: tuple[Section, ...]
    broken: tuple[str, ...]  # one line each, naming the package and the error


def check(sections: tuple[Section, ...]) -> None:
    """ConfigError when two sections, or a section and the wire, declare the same key."""
    seen: dict[str, str] = {name: "the wire" for name in KEYS_BY_NAME}
    names: set[str] = set()
    for section in sections:
        if section.name in names:
            raise ConfigError(f"settings section {section.name!r} is registered twice")
        names.add(section.name)
        for key in section.keys:
            if key.name in seen:
                raise ConfigError(
                    f"setting {key.name!r} of section {section.name!r} "
                    f"is already declared by {seen[key.name]}"
                )
            seen[key.name] = f"section {section.name!r}"


@functools.cache
def registered_sections() -> Registered:
    """Every section registered in ``tcx_bridge.settings``, loaded once per process."""
    sections: list[Section] = []
    broken: list[str] = []
    for point in registered(SETTINGS).values():
        try:
            section = load(point, "settings section")
        except ConfigError as error:
            logger.warning("%s", error)
            broken.append(str(error))
            continue
        if not isinstance(section, Section):
            broken.append(f"settings section {point.name!r} ({point.value}) is not a bridge.sections.Section")
            continue
        sections.append(section)
    result = tuple(sorted(sections, key=lambda section: section.name))
    check(result)
    return Registered(result, tuple(broken))
