"""Setting values: each parser takes (label, raw value) and returns the value the code uses.

A parser raises :class:`ConfigError` naming the label (the key, variable or flag) and
quoting the bad value. Nothing here imports a heavy module at load: the notify
executable parses every key on each launch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bridge.errors import ConfigError
from bridge.events import MAX_DESK, MAX_EXTENSION, desk_problem
from bridge.handoff import ENDPOINTS
from bridge.redact import redact_text, redact_url, split_userinfo
from bridge.text import printable

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_DISALLOWED_IN_DESK = re.compile(r"[^A-Za-z0-9_-]")


def host_port(host: str, port: int) -> str:
    """``host:port`` for an address, an IPv6 one in brackets (``[::1]:8080``), as URLs write it."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def reduce_desk(value: str) -> str:
    """A desk id reduced to ``[A-Za-z0-9_-]`` (other characters are dropped)."""
    return _DISALLOWED_IN_DESK.sub("", value)


def parse_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name}: {redact_text(repr(value))} is not a string; give it as text")
    return value


def parse_optional_text(name: str, value: Any) -> str | None:
    return parse_text(name, value).strip() or None if value is not None else None


def parse_ca_file(name: str, value: Any) -> str | None:
    path = parse_optional_text(name, value)
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


def parse_amqp_url(name: str, value: Any) -> str:
    """One broker URL or several (comma-separated, or a TOML array); each checked on its own."""
    if isinstance(value, list):
        value = ",".join(parse_text(name, item) for item in value)
    urls = split_urls(parse_text(name, value))
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


def parse_name(name: str, value: Any) -> str:
    text = parse_text(name, value).strip()
    if not _NAME_RE.match(text):
        raise ConfigError(f"{name}: {value!r} is not a valid name; use 1 to 200 of A-Z a-z 0-9 _ . : -")
    return text


def parse_desk(name: str, value: Any) -> str:
    """A desk id as the consumers take it (bridge.events' limits): anything else is refused, not reduced."""
    text = parse_text(name, value).strip()
    problem = desk_problem(text)
    if problem:
        suggestion = reduce_desk(text)
        hint = f" (e.g. {suggestion!r})" if suggestion != text and 0 < len(suggestion) <= MAX_DESK else ""
        raise ConfigError(f"{name}: {printable(repr(text), 100)} {problem}{hint}")
    return text


def parse_extension(name: str, value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = parse_optional_text(name, value)
    if text is not None and not re.fullmatch(rf"[0-9A-Za-z_-]{{1,{MAX_EXTENSION}}}", text):
        raise ConfigError(f"{name}: {value!r} is not an extension; use digits like 101")
    return text


def at_least(kind: type, low: float) -> Callable[[str, Any], Any]:
    def parse(name: str, value: Any) -> Any:
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: {value!r} is not a number; give e.g. {kind(low + 1)}") from None
        if number < low:
            raise ConfigError(f"{name}: {value!r} is too small; give at least {kind(low)}")
        return number

    return parse


def parse_boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}: {value!r} is not a boolean; use true or false")


def parse_region(name: str, value: Any) -> str:
    text = parse_text(name, value).strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", text):
        raise ConfigError(f"{name}: {value!r} is not a two-letter region code; use e.g. CH")
    return text


def parse_url_template(name: str, value: Any) -> str | None:
    text = parse_optional_text(name, value)
    if text is not None and not text.lower().startswith(("http://", "https://")):
        raise ConfigError(f"{name}: {redact_url(text)!r} is not an http(s) URL template")
    return text


def parse_port(name: str, value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    port = at_least(int, 1)(name, value)
    if port > 65535:
        raise ConfigError(f"{name}: {value!r} is not a port; give 1 to 65535, e.g. 9464")
    return int(port)


def parse_log_format(name: str, value: Any) -> str:
    text = parse_text(name, value).strip().lower()
    if text not in ("text", "json"):
        raise ConfigError(f"{name}: {value!r} is not a log format; use text or json")
    return text


def parse_handoff_endpoint(name: str, value: Any) -> str:
    text = parse_text(name, value).strip().lower()
    if text not in ENDPOINTS:
        raise ConfigError(f"{name}: {value!r} is not a hand-off endpoint; use auto, unix or tcp")
    return text


def parse_timezone(name: str, value: Any) -> str | None:
    text = parse_optional_text(name, value)
    if text is None:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a time zone; use e.g. Europe/Zurich or UTC") from None
    return text


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(name: str, value: Any) -> float:
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


def parse_log_numbers(name: str, value: Any) -> str:
    text = parse_text(name, value).strip().lower()
    if text not in ("masked", "full"):
        raise ConfigError(f"{name}: {value!r} is not a way to log numbers; use masked or full")
    return text


_RETENTION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
KEEP_FOREVER = ("0", "off", "forever", "none")


def parse_retention(name: str, value: Any) -> float | None:
    """Seconds from days (a plain number) or a number with d, h, m or s (30, 90d, 12h); 0 or off: forever."""
    text = str(value).strip().lower()
    if text in KEEP_FOREVER:
        return None
    unit = _RETENTION_UNITS.get(text[-1:], 0.0)
    hint = "give days (30) or 90d, 12h, 30m; 0 or off keeps forever"
    try:
        seconds = float(text[:-1] if unit else text) * (unit or 86400.0)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a retention; {hint}") from None
    if seconds != seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:
        raise ConfigError(f"{name}: {value!r} is not a retention; {hint}")
    if seconds == 0:
        return None
    if seconds < 1.0:
        raise ConfigError(f"{name}: {value!r} is too short; give at least 1s")
    return seconds


def parse_words(name: str, value: Any) -> tuple[str, ...]:
    """A list: a TOML array, or text separated by commas, semicolons or spaces."""
    items = value if isinstance(value, list | tuple) else re.split(r"[,;\s]+", parse_text(name, value))
    return tuple(word for word in (parse_text(name, item).strip() for item in items) if word)


def parse_prefixes(name: str, value: Any) -> tuple[str, ...]:
    """E.164 prefixes: + and digits (00 taken for +; spaces, dashes and dots dropped)."""
    found = []
    for word in parse_words(name, value):
        compact = re.sub(r"[\s.\-()]", "", word)
        compact = "+" + compact[2:] if compact.startswith("00") else compact
        if not re.fullmatch(r"\+[0-9]{1,15}", compact):
            raise ConfigError(f"{name}: {word!r} is not an E.164 prefix; use + and digits, e.g. +41900")
        found.append(compact)
    return tuple(found)


def parse_store_url(name: str, value: Any) -> str | None:
    text = parse_optional_text(name, value)
    if text is None:
        return None
    scheme = text.partition("://")[0].lower()
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"{name}: {redact_url(text)!r} is not a PostgreSQL URL; use postgresql://user@host:5432/dbname, "
            "or leave it unset for the SQLite files in the data dir"
        )
    return text


def check_region(region: str) -> None:
    """ConfigError unless phonenumbers knows region (national numbers are read in it)."""
    import phonenumbers  # not on notify's path: only the commands that read numbers check it

    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"region: {region!r} is not a region phonenumbers knows; use a two-letter country code "
            "such as CH, DE, AT, FR, IT or GB (TCX_BRIDGE_REGION)"
        )


_MAX_AGE = re.compile(r"^[1-9][0-9]{0,8}[YMDhms]$")


def parse_max_age(name: str, value: Any) -> str:
    """A stream's retention age as x-max-age takes it: a number and Y, M, D, h, m or s (7D, 12h)."""
    text = str(value).strip()
    if not _MAX_AGE.match(text):
        raise ConfigError(
            f"{name}: {value!r} is not a retention age; give a number and Y, M, D, h, m or s (7D, 12h, 90m)"
        )
    return text
