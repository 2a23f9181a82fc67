"""Settings: defaults < TOML file < environment < flags.

The file is ``TCX_BRIDGE_CONFIG`` if set, else ``config.toml`` in the platform
config dir (missing is fine there). Its keys are the setting names below, at top
level. Every bad value raises :class:`ConfigError` naming the key and the value.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import msgspec

from bridge.errors import ConfigError
from bridge.events import MAX_DESK, MAX_EXTENSION, desk_problem
from bridge.redact import redact_text, split_userinfo
from bridge.redact import redact_url as redact_url  # its old home: callers import it from here too
from bridge.text import printable

APP_NAME = "tcx-bridge"
ENV_PREFIX = "TCX_BRIDGE_"
CONFIG_ENV = "TCX_BRIDGE_CONFIG"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_DISALLOWED_IN_DESK = re.compile(r"[^A-Za-z0-9_-]")


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
    crm_fields: str
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
    wallboard_thresholds: str
    wallboard_lost_after: float
    wallboard_locale: str | None
    wallboard_hostnames: str
    store_url: str | None
    trust_user_id: bool
    dial_deny_types: tuple[str, ...]
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


class Key(NamedTuple):
    """One setting: its name, environment variable, default and parser."""

    name: str
    default: Callable[[dict[str, Any], Mapping[str, str]], Any]
    parse: Callable[[str, Any], Any]
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def host_port(host: str, port: int) -> str:
    """``host:port`` for an address, an IPv6 one in brackets (``[::1]:8080``), as URLs write it."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def reduce_desk(value: str) -> str:
    """A desk id reduced to ``[A-Za-z0-9_-]`` (other characters are dropped)."""
    return _DISALLOWED_IN_DESK.sub("", value)


def _default_desk(_: dict[str, Any], __: Mapping[str, str]) -> str:
    return reduce_desk(socket.gethostname().split(".")[0])[:MAX_DESK] or "desk"


def platform_dir(kind: str, environ: Mapping[str, str] | None = None) -> Path:
    """The per-user ``data`` or ``config`` directory of tcx-bridge, by platform convention.

    Same places as platformdirs' user_data_dir/user_config_dir (appauthor=False);
    written out because importing platformdirs costs each launch about 4.5 ms.
    """
    environ = os.environ if environ is None else environ
    if sys.platform == "win32":
        base = environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(Path.home() / "Library" / "Application Support")
    elif kind == "config":
        base = environ.get("XDG_CONFIG_HOME", "").strip() or str(Path.home() / ".config")
    else:
        base = environ.get("XDG_DATA_HOME", "").strip() or str(Path.home() / ".local" / "share")
    return Path(base) / APP_NAME


def _default_data_dir(_: dict[str, Any], environ: Mapping[str, str]) -> str:
    return str(platform_dir("data", environ))


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name}: {redact_text(repr(value))} is not a string; give it as text")
    return value


def _optional_text(name: str, value: Any) -> str | None:
    return _text(name, value).strip() or None if value is not None else None


def _ca_file(name: str, value: Any) -> str | None:
    path = _optional_text(name, value)
    if path is not None and not os.path.isfile(path):
        raise ConfigError(f"{name}: {value!r} is not a file; give the path of a PEM CA bundle")
    return path


def split_urls(value: str) -> list[str]:
    """The broker addresses of an amqp_url: full URLs; a later ``host:port`` takes the first's rest.

    ``amqp://u:p@mq1:5672/%2F,mq2:5672,mq3`` is mq1, mq2 and mq3 with the same
    scheme, user, password, vhost and options.
    """
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts:
        return []
    first = urlsplit(parts[0]) if "://" in parts[0] else None
    urls = [parts[0]]
    for part in parts[1:]:
        if "://" in part or first is None:
            urls.append(part)
            continue
        userinfo = first.netloc.rsplit("@", 1)[0] + "@" if "@" in first.netloc else ""
        urls.append(urlunsplit(first._replace(netloc=userinfo + part)))
    return urls


def _amqp_url(name: str, value: Any) -> str:
    """One broker URL or several (comma-separated, or a TOML array); each checked on its own."""
    if isinstance(value, list):
        value = ",".join(_text(name, item) for item in value)
    urls = split_urls(_text(name, value))
    if not urls:
        raise ConfigError(f"{name}: no broker URL given; use amqp://user:password@host:5672/%2F")
    for url in urls:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        problem = None if scheme in ("amqp", "amqps") else "is not an AMQP URL"
        userinfo = split_userinfo(url) if problem is None else None
        if userinfo is not None and any(mark in userinfo[1] for mark in "/?#"):
            problem = "has a password with / ? or # in it; percent-encode them (%2F %3F %23)"
        if problem is None:
            try:
                parts = urlsplit(url)
                port = parts.port
            except ValueError as error:
                problem = f"is not usable ({redact_text(str(error), url)})"
            else:
                if not parts.hostname:
                    problem = "has no host"
                elif port is not None and not 0 < port < 65536:
                    problem = f"has an impossible port {port}"
        if problem:
            where = f" (address {urls.index(url) + 1} of {len(urls)})" if len(urls) > 1 else ""
            raise ConfigError(
                f"{name}: {redact_url(url)!r}{where} {problem}; "
                "use amqp://user:password@host:5672/%2F or amqps://..., comma-separated for a cluster"
            )
    return ",".join(urls)


def _name(name: str, value: Any) -> str:
    text = _text(name, value).strip()
    if not _NAME_RE.match(text):
        raise ConfigError(f"{name}: {value!r} is not a valid name; use 1 to 200 of A-Z a-z 0-9 _ . : -")
    return text


def _desk(name: str, value: Any) -> str:
    """A desk id as the consumers take it (bridge.events' limits): anything else is refused, not reduced."""
    text = _text(name, value).strip()
    problem = desk_problem(text)
    if problem:
        suggestion = reduce_desk(text)
        hint = f" (e.g. {suggestion!r})" if suggestion != text and 0 < len(suggestion) <= MAX_DESK else ""
        raise ConfigError(f"{name}: {printable(repr(text), 100)} {problem}{hint}")
    return text


def _extension(name: str, value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _optional_text(name, value)
    if text is not None and not re.fullmatch(rf"[0-9A-Za-z_-]{{1,{MAX_EXTENSION}}}", text):
        raise ConfigError(f"{name}: {value!r} is not an extension; use digits like 101")
    return text


def _number(kind: type, low: float) -> Callable[[str, Any], Any]:
    def parse(name: str, value: Any) -> Any:
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: {value!r} is not a number; give e.g. {kind(low + 1)}") from None
        if number < low:
            raise ConfigError(f"{name}: {value!r} is too small; give at least {kind(low)}")
        return number

    return parse


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}: {value!r} is not a boolean; use true or false")


def _region(name: str, value: Any) -> str:
    text = _text(name, value).strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", text):
        raise ConfigError(f"{name}: {value!r} is not a two-letter region code; use e.g. CH")
    return text


def _url_template(name: str, value: Any) -> str | None:
    text = _optional_text(name, value)
    if text is not None and not text.lower().startswith(("http://", "https://")):
        raise ConfigError(f"{name}: {redact_url(text)!r} is not an http(s) URL template")
    return text


def _port(name: str, value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    port = _number(int, 1)(name, value)
    if port > 65535:
        raise ConfigError(f"{name}: {value!r} is not a port; give 1 to 65535, e.g. 9464")
    return int(port)


def _log_format(name: str, value: Any) -> str:
    text = _text(name, value).strip().lower()
    if text not in ("text", "json"):
        raise ConfigError(f"{name}: {value!r} is not a log format; use text or json")
    return text


def _timezone(name: str, value: Any) -> str | None:
    text = _optional_text(name, value)
    if text is None:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a time zone; use e.g. Europe/Zurich or UTC") from None
    return text


def _thresholds(name: str, value: Any) -> str:
    text = _text(name, value).strip()
    for part in filter(None, (item.strip() for item in text.split(","))):
        key, _, levels = part.partition("=")
        amber, _, red = levels.partition("/")
        try:
            ok = key.strip() in ("waiting", "wait", "missed") and float(amber) <= float(red)
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(
                f"{name}: {part!r} is not name=amber/red with name waiting, wait or missed (e.g. wait=30/60)"
            )
    return text


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(name: str, value: Any) -> float:
    """Seconds from minutes (a plain number) or a number with s, m or h (90s, 30m, 2h); at least 1 s."""
    text = str(value).strip().lower()
    unit = _DURATION_UNITS.get(text[-1:], 0.0)
    try:
        seconds = float(text[:-1] if unit else text) * (unit or 60.0)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a duration; give minutes (30) or 90s, 30m, 2h") from None
    if seconds != seconds or seconds == float("inf"):  # nan, inf
        raise ConfigError(f"{name}: {value!r} is not a duration; give minutes (30) or 90s, 30m, 2h")
    if seconds < 1.0:
        raise ConfigError(f"{name}: {value!r} is too short; give at least 1s")
    return seconds


def _locale(name: str, value: Any) -> str | None:
    text = _optional_text(name, value)
    if text is not None and not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,4}", text):
        raise ConfigError(f"{name}: {value!r} is not a locale; use a language tag such as de-CH or en-US")
    return text


def _hostnames(name: str, value: Any) -> str:
    """Comma-separated host names (or a TOML array), lower case."""
    if isinstance(value, list):
        value = ",".join(_text(name, item) for item in value)
    names = [part.strip().lower().rstrip(".") for part in _text(name, value).split(",") if part.strip()]
    for host in names:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*|[0-9a-f:.]+", host):
            raise ConfigError(f"{name}: {host!r} is not a host name; use e.g. wallboard.example.com")
    return ",".join(names)


def _words(name: str, value: Any) -> tuple[str, ...]:
    """A list: a TOML array, or text separated by commas, semicolons or spaces."""
    items = value if isinstance(value, list | tuple) else re.split(r"[,;\s]+", _text(name, value))
    return tuple(word for word in (_text(name, item).strip() for item in items) if word)


def _number_types(name: str, value: Any) -> tuple[str, ...]:
    """phonenumbers' number types by name (checked against phonenumbers where the agent starts)."""
    found = tuple(word.upper().replace("-", "_") for word in _words(name, value))
    for word in found:
        if not re.fullmatch(r"[A-Z_]{3,30}", word):
            raise ConfigError(f"{name}: {word!r} is not a number type; use e.g. PREMIUM_RATE, SHARED_COST")
    return found


def _prefixes(name: str, value: Any) -> tuple[str, ...]:
    """E.164 prefixes: + and digits (00 taken for +; spaces, dashes and dots dropped)."""
    found = []
    for word in _words(name, value):
        compact = re.sub(r"[\s.\-()]", "", word)
        compact = "+" + compact[2:] if compact.startswith("00") else compact
        if not re.fullmatch(r"\+[0-9]{1,15}", compact):
            raise ConfigError(f"{name}: {word!r} is not an E.164 prefix; use + and digits, e.g. +41900")
        found.append(compact)
    return tuple(found)


RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
RATE_UNITS |= {"h": 3600.0, "hour": 3600.0}


def parse_rate(name: str, value: Any) -> tuple[int, float]:
    """``20/min`` (also ``20``: per minute, ``100/hour``, ``0``: no limit) as (count, seconds)."""
    text = str(value).strip().lower().replace(" ", "")
    count, _, unit = text.partition("/")
    unit = unit.removeprefix("1").rstrip("s") if unit not in ("s", "m", "h") else unit
    if not count.isdigit() or (unit and unit not in RATE_UNITS):
        raise ConfigError(f"{name}: {value!r} is not a rate; give dials per minute like 20/min (0: no limit)")
    return int(count), RATE_UNITS[unit or "min"]


def _rate(name: str, value: Any) -> str:
    count, seconds = parse_rate(name, value)
    unit = {1.0: "s", 60.0: "min", 3600.0: "hour"}[seconds]
    return f"{count}/{unit}"


def _const(value: Any) -> Callable[[dict[str, Any], Mapping[str, str]], Any]:
    return lambda _, __: value


def _store_url(name: str, value: Any) -> str | None:
    text = _optional_text(name, value)
    if text is None:
        return None
    scheme = text.partition("://")[0].lower()
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"{name}: {redact_url(text)!r} is not a PostgreSQL URL; use postgresql://user@host:5432/dbname, "
            "or leave it unset for the SQLite files in the data dir"
        )
    return text


KEYS: tuple[Key, ...] = (
    Key(
        "amqp_url",
        _const("amqp://guest:guest@localhost:5672/%2F"),
        _amqp_url,
        "broker URL, or several comma-separated (a cluster; later ones may be host:port); "
        "amqps:// verifies the server certificate",
    ),
    Key("ca_file", _const(None), _ca_file, "CA bundle for amqps:// (default: system CAs)"),
    Key("namespace", _const("tcx"), _name, "prefix of every exchange and queue name"),
    Key("exchange", lambda v, _: f"{v['namespace']}.events", _name, "the events exchange (topic)"),
    Key("desk", _default_desk, _desk, "this desk's id in routing keys (default: host name)"),
    Key("extension", _const(None), _extension, "the agent's 3CX extension"),
    Key("data_dir", _default_data_dir, _text, "outbox, logs and local stores"),
    Key(
        "publish_budget",
        _const(3.0),
        _number(float, 0.1),
        "seconds a launch may spend on retries before it outboxes the event",
    ),
    Key("replay_batch", _const(20), _number(int, 0), "outboxed events one launch replays at most"),
    Key("log_max_bytes", _const(1_000_000), _number(int, 10_000), "size of the notify log before it rotates"),
    Key("region", _const("CH"), _region, "default region for national caller ids"),
    Key("prefetch", _const(100), _number(int, 1), "unacked messages a consumer holds at most"),
    Key("quorum", _const(False), _boolean, "declare consumer queues as quorum queues"),
    Key("max_attempts", _const(5), _number(int, 1), "deliveries of one message before it is dead-lettered"),
    Key("assistant", _const("tcx.assistant.client.exe"), _text, "the 3CX Assistant client executable"),
    Key("assistant_timeout", _const(15.0), _number(float, 0.1), "seconds the Assistant may take to dial"),
    Key(
        "assistant_process",
        _const("tcx.assistant.client.exe" if sys.platform == "win32" else None),
        _optional_text,
        "process name that must be running before a dial (default on Windows: tcx.assistant.client.exe; "
        "elsewhere none: no check)",
    ),
    Key(
        "dial_confirm_timeout",
        _const(20.0),
        _number(float, 0.0),
        "seconds the agent waits for the Assistant's outbound call event to confirm a dial (0: off)",
    ),
    Key(
        "popup_command",
        _const(None),
        _optional_text,
        "command template for screen pops, e.g. 'crm-open {url}' (default: open the URL in a browser)",
    ),
    Key(
        "crm_lookup_url",
        _const(None),
        _url_template,
        "HTTP contact lookup, e.g. https://crm.example.com/api/contacts?phone={e164}",
    ),
    Key(
        "crm_fields",
        _const("name=name,company=company,email=email,url=url"),
        _text,
        "how the HTTP lookup's JSON maps to contact fields (dotted paths)",
    ),
    Key("crm_journal_url", _const(None), _url_template, "HTTP endpoint the call journal is POSTed to"),
    Key("crm_timeout", _const(5.0), _number(float, 0.1), "seconds an HTTP CRM request may take"),
    Key("popup_ttl", _const(30.0), _number(float, 1.0), "seconds a screen pop stays useful"),
    Key(
        "replay_interval",
        _const(30.0),
        _number(float, 0.1),
        "seconds between the desk agent's outbox replays",
    ),
    Key(
        "metrics_port",
        _const(None),
        _port,
        "serve Prometheus /metrics, /healthz and /readyz on this port (consume, agent; default off)",
    ),
    Key("metrics_host", _const("127.0.0.1"), _text, "address the metrics port binds to"),
    Key("log_format", _const("text"), _log_format, "text, or json: one JSON object per log line"),
    Key(
        "service_level_seconds",
        _const(20.0),
        _number(float, 1.0),
        "wallboard: an inbound call answered within this many seconds counts for the service level",
    ),
    Key(
        "desk_idle_minutes",
        _const(15.0),
        _number(float, 1.0),
        "wallboard: a desk with no event this long is quiet",
    ),
    Key(
        "timezone",
        _const(None),
        _timezone,
        "wallboard: the day's time zone, e.g. Europe/Zurich (default: the machine's)",
    ),
    Key("wallboard_token", _const(None), _optional_text, "wallboard: the token a non-local bind requires"),
    Key(
        "wallboard_thresholds",
        _const("waiting=2/5,wait=30/60,missed=5/10"),
        _thresholds,
        "wallboard: amber/red for calls waiting, longest wait (s) and missed calls",
    ),
    Key(
        "wallboard_lost_after",
        _const(1800.0),
        _duration,
        "wallboard: a call with no end event this long (minutes, or 90s, 2h) is shown as no end seen",
    ),
    Key(
        "wallboard_locale",
        _const(None),
        _locale,
        "wallboard: how times and numbers are written, e.g. de-CH, en-US (default: 24-hour clock, 1,234.5)",
    ),
    Key(
        "wallboard_hostnames",
        _const(""),
        _hostnames,
        "wallboard: host names browsers may use besides its bind address, e.g. wallboard.example.com",
    ),
    Key(
        "store_url",
        _const(None),
        _store_url,
        "consumers' store: postgresql://user@host/db (extra tcx-bridge[postgres]); unset: SQLite files",
    ),
    Key(
        "trust_user_id",
        _const(True),
        _boolean,
        "consumers: dead-letter an event or command without user_id, or from desk-<A> for another desk",
    ),
    Key(
        "dial_deny_types",
        _const(("PREMIUM_RATE",)),
        _number_types,
        "agent: number types never dialed (phonenumbers' names: PREMIUM_RATE, SHARED_COST, ...)",
    ),
    Key("dial_allow", _const(()), _prefixes, "agent: E.164 prefixes dialed; when set, only these"),
    Key("dial_deny", _const(()), _prefixes, "agent: E.164 prefixes never dialed (the longest match decides)"),
    Key(
        "dial_rate", _const("20/min"), _rate, "agent: dials a desk places at most, e.g. 20/min (0: no limit)"
    ),
)
KEYS_BY_NAME = {key.name: key for key in KEYS}
SECRET_KEYS = frozenset({"wallboard_token"})  # shown as **** by `config`


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
) -> Loaded:
    """Resolve every setting from defaults, the TOML file, the environment and flags.

    lenient: a bad value (or an unreadable file) falls back to the default instead of
    raising, so that the notify executable can still keep the event somewhere.
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
