"""Settings: defaults < TOML file < environment < flags.

The file is ``TCX_BRIDGE_CONFIG`` if set, else ``config.toml`` in the platform
config dir (missing is fine there). Its keys are the setting names of
:mod:`bridge.keys`, at top level. Every bad value raises :class:`ConfigError` naming the key and the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from bridge.errors import ConfigError
from bridge.events import MAX_DESK

# the keys and their values live in bridge.keys and bridge.values; these names are imported from here too
from bridge.keys import APP_NAME as APP_NAME
from bridge.keys import ENV_PREFIX as ENV_PREFIX
from bridge.keys import KEYS as KEYS
from bridge.keys import KEYS_BY_NAME as KEYS_BY_NAME
from bridge.keys import SECRET_KEYS as SECRET_KEYS
from bridge.keys import Key as Key
from bridge.keys import platform_dir as platform_dir
from bridge.redact import redact_text
from bridge.redact import redact_url as redact_url  # its old home: callers import it from here too
from bridge.values import check_region as check_region
from bridge.values import host_port as host_port
from bridge.values import reduce_desk as reduce_desk
from bridge.values import split_urls as split_urls

if TYPE_CHECKING:
    from bridge.sections import Section

CONFIG_ENV = "TCX_BRIDGE_CONFIG"


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The effective configuration. Derived names (exchanges, queues) are properties."""

    amqp_url: str
    ca_file: str | None
    namespace: str
    exchange: str
    desk: str
    extension: str | None
    data_dir: str
    publish_budget: float
    handoff_timeout: float
    handoff_endpoint: str
    replay_batch: int
    log_max_bytes: int
    region: str
    prefetch: int
    quorum: bool
    max_attempts: int
    popup_ttl: float
    metrics_port: int | None
    metrics_host: str
    log_format: str
    log_numbers: str
    retention_logs: float | None
    retention_dead: float | None
    timezone: str | None
    store_url: str | None
    trust_user_id: bool
    history_max_age: str
    history_max_bytes: int
    # each settings section's options (bridge.sections), by section name: ``SECTION.of(settings)``
    options: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def broker_count(self) -> int:
        """How many broker addresses amqp_url holds (a cluster: several, comma-separated)."""
        return self.amqp_url.count(",") + 1

    @property
    def unrouted_exchange(self) -> str:
        return f"{self.namespace}.unrouted"

    @property
    def commands_exchange(self) -> str:
        return f"{self.namespace}.commands"

    @property
    def dead_exchange(self) -> str:
        return f"{self.namespace}.dead"

    def queue(self, consumer: str) -> str:
        """The durable queue of one consumer, e.g. ``tcx.crm``."""
        return f"{self.namespace}.{consumer}"

    def dead_queue(self, consumer: str) -> str:
        """The dead-letter queue of one consumer, e.g. ``tcx.dead.crm``."""
        return f"{self.namespace}.dead.{consumer}"

    @property
    def outbox_dir(self) -> Path:
        return Path(self.data_dir) / "outbox"

    @property
    def log_dir(self) -> Path:
        return Path(self.data_dir) / "logs"


class Loaded(NamedTuple):
    """Settings with, for each key, where its value came from."""

    settings: Settings
    sources: dict[str, str]
    keys: tuple[Key, ...] = KEYS  # every key loaded, the wire's then the sections', in `config`'s order


def config_path(environ: Mapping[str, str]) -> tuple[Path | None, bool]:
    """The config file to read, and whether it was asked for explicitly."""
    explicit = environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit), True
    return platform_dir("config", environ) / "config.toml", False


def _read_file(path: Path | None, explicit: bool, known: set[str] | None) -> dict[str, Any]:
    """The file's keys; known: the keys it may hold (None: any, as when not every section is loaded)."""
    if path is None:
        return {}
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{CONFIG_ENV}: config file {str(path)!r} does not exist") from None
        return {}
    except OSError as error:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {error}") from None
    import tomllib  # only when there is a file to read

    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))  # Notepad saves UTF-8 with a BOM
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from None
    unknown = sorted(set(data) - known) if known is not None else []
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r}: unknown key {unknown[0]!r}; "
            f"known keys: {', '.join(sorted(known or ()))}"
        )
    return data


def _sections(sections: Sequence[Section] | None) -> tuple[tuple[Section, ...], bool]:
    """The sections to load, and whether they are all there are (then an unknown key is an error)."""
    if sections is not None:
        return tuple(sections), False
    from bridge.sections import registered_sections  # the entry-point scan: the CLI's, never notify's

    found = registered_sections()
    return found.sections, not found.broken


def _resolve(
    keys: tuple[Key, ...],
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    from_file: Mapping[str, Any],
    path: Path | None,
    *,
    lenient: bool,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Each key's value, parsed, and where it came from: flag < environment < file < default."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in keys:
        if key.name in flags:
            raw, source, label = flags[key.name], "flag", f"--{key.name.replace('_', '-')}"
        elif key.env in environ:
            raw, source, label = environ[key.env], f"env {key.env}", key.env
        elif key.name in from_file:
            raw, source, label = from_file[key.name], f"file {path}", f"{key.name} in {path}"
        else:
            values[key.name] = key.default(values, environ)
            sources[key.name] = "default"
            continue
        try:
            values[key.name] = key.parse(label, raw)
        except ConfigError:
            if not lenient:
                raise
            # a bad desk id is reduced to one (as it was before it was refused), so a rescued event
            # is for the desk meant, not the host name's
            rescued = reduce_desk(raw)[:MAX_DESK] if key.name == "desk" and isinstance(raw, str) else ""
            values[key.name] = rescued or key.default(values, environ)
            source = f"{label} reduced, it is bad" if rescued else f"default, {label} is bad"
        sources[key.name] = source
    return values, sources


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    read_file: bool = True,
    lenient: bool = False,
    checks: bool = False,
    sections: Sequence[Section] | None = None,
) -> Loaded:
    """Resolve every setting from defaults, the TOML file, the environment and flags.

    lenient: a bad value (or an unreadable file) falls back to the default instead of
    raising, so that the notify executable can still keep the event somewhere.
    checks: also run the keys' checks that import a library (region: phonenumbers);
    the CLI asks for them, the notify executable does not (phonenumbers stays off its path).
    sections: the settings sections to load besides the wire's keys (default: every
    registered one, :mod:`bridge.sections`); the notify executable passes none, and
    then the file's keys of sections not loaded are ignored.
    """
    environ = os.environ if environ is None else environ
    chosen, complete = _sections(sections)
    keys = KEYS + tuple(key for section in chosen for key in section.keys)
    known = {key.name for key in keys}
    flags = {name: value for name, value in (flags or {}).items() if value is not None}
    unknown = sorted(set(flags) - known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}")
    path, explicit = config_path(environ) if read_file else (None, False)
    try:
        from_file = _read_file(path, explicit, known if complete else None)
    except ConfigError:
        if not lenient:
            raise
        from_file = {}

    values, sources = _resolve(keys, flags, environ, from_file, path, lenient=lenient)
    if checks:
        for key in keys:
            if key.check is not None and sources[key.name] != "default":  # a default is ours, and good
                key.check(values[key.name])
    options = {
        section.name: section.options(**{key.name: values.pop(key.name) for key in section.keys})
        for section in chosen
    }
    return Loaded(Settings(**values, options=options), sources, keys)


def describe(loaded: Loaded) -> list[tuple[str, str, str, str]]:
    """Rows of (key, environment variable, shown value, source), secrets masked; sections after the wire.

    Every URL in any value (amqp_url, store_url, crm_*_url, a URL in popup_command)
    has its passwords and secret parameters masked; a token is never shown.
    """
    settings = loaded.settings
    holder = {name: part for part in settings.options.values() for name in msgspec.structs.asdict(part)}
    return [
        _row(key, getattr(holder.get(key.name, settings), key.name), loaded.sources) for key in loaded.keys
    ]


def _row(key: Key, value: Any, sources: dict[str, str]) -> tuple[str, str, str, str]:
    if isinstance(value, tuple) and all(isinstance(item, str) for item in value):
        value = ",".join(value)
    if (key.secret or key.name in SECRET_KEYS) and value is not None:
        shown = "****"
    else:
        shown = "" if value is None else redact_text(str(value))
    return (key.name, key.env, shown, sources[key.name])
