"""Settings: defaults < TOML file < environment < flags.

The file is ``TCX_BRIDGE_CONFIG`` if set, else ``config.toml`` in the platform
config dir (missing is fine there). Its keys are the setting names of
:mod:`bridge.keys`, at top level. Every bad value raises :class:`ConfigError` naming the key and the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

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
from bridge.values import RATE_UNITS as RATE_UNITS
from bridge.values import FieldMap, Thresholds
from bridge.values import check_region as check_region
from bridge.values import host_port as host_port
from bridge.values import parse_rate as parse_rate
from bridge.values import reduce_desk as reduce_desk
from bridge.values import split_urls as split_urls

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
    replay_batch: int
    log_max_bytes: int
    region: str
    prefetch: int
    quorum: bool
    max_attempts: int
    assistant: str
    assistant_timeout: float
    assistant_process: str | None
    dial_confirm_timeout: float
    popup_command: str | None
    crm_lookup_url: str | None
    crm_fields: FieldMap  # parsed at load: the CRM reads the pairs
    crm_journal_url: str | None
    crm_timeout: float
    popup_ttl: float
    replay_interval: float
    metrics_port: int | None
    metrics_host: str
    log_format: str
    service_level_seconds: float
    desk_idle_minutes: float
    timezone: str | None
    wallboard_token: str | None
    wallboard_thresholds: Thresholds  # parsed at load: the wallboard reads the levels
    wallboard_lost_after: float
    wallboard_locale: str | None
    wallboard_hostnames: str
    store_url: str | None
    trust_user_id: bool
    dial_deny_types: tuple[str, ...]
    history_max_age: str
    history_max_bytes: int
    dial_allow: tuple[str, ...]
    dial_deny: tuple[str, ...]
    dial_rate: str

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


def config_path(environ: Mapping[str, str]) -> tuple[Path | None, bool]:
    """The config file to read, and whether it was asked for explicitly."""
    explicit = environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit), True
    return platform_dir("config", environ) / "config.toml", False


def _read_file(path: Path | None, explicit: bool) -> dict[str, Any]:
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
    unknown = sorted(set(data) - set(KEYS_BY_NAME))
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r}: unknown key {unknown[0]!r}; known keys: {', '.join(KEYS_BY_NAME)}"
        )
    return data


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    read_file: bool = True,
    lenient: bool = False,
    checks: bool = False,
) -> Loaded:
    """Resolve every setting from defaults, the TOML file, the environment and flags.

    lenient: a bad value (or an unreadable file) falls back to the default instead of
    raising, so that the notify executable can still keep the event somewhere.
    checks: also run the keys' checks that import a library (region: phonenumbers);
    the CLI asks for them, the notify executable does not (phonenumbers stays off its path).
    """
    environ = os.environ if environ is None else environ
    flags = {name: value for name, value in (flags or {}).items() if value is not None}
    unknown = sorted(set(flags) - set(KEYS_BY_NAME))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}")
    path, explicit = config_path(environ) if read_file else (None, False)
    try:
        from_file = _read_file(path, explicit)
    except ConfigError:
        if not lenient:
            raise
        from_file = {}

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
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
    if checks:
        for key in KEYS:
            if key.check is not None and sources[key.name] != "default":  # a default is ours, and good
                key.check(values[key.name])
    return Loaded(Settings(**values), sources)


def describe(loaded: Loaded) -> list[tuple[str, str, str, str]]:
    """Rows of (key, environment variable, shown value, source), secrets masked.

    Every URL in any value (amqp_url, store_url, crm_*_url, a URL in popup_command)
    has its passwords and secret parameters masked; a token is never shown.
    """
    rows = []
    for key in KEYS:
        value = getattr(loaded.settings, key.name)
        if isinstance(value, tuple):
            value = ",".join(value)
        if key.name in SECRET_KEYS and value is not None:
            shown = "****"
        else:
            shown = "" if value is None else redact_text(str(value))
        rows.append((key.name, key.env, shown, loaded.sources[key.name]))
    return rows
