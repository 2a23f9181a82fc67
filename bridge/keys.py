"""The settings' keys: name, environment variable, default, parser and help, in the order shown.

``tcx-bridge config`` lists them in this order; the TOML file's keys and the
``TCX_BRIDGE_*`` variables are these names (a public contract: never rename one).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from bridge.events import MAX_DESK
from bridge.values import (
    at_least,
    check_region,
    parse_amqp_url,
    parse_boolean,
    parse_ca_file,
    parse_crm_fields,
    parse_desk,
    parse_duration,
    parse_extension,
    parse_hostnames,
    parse_locale,
    parse_log_format,
    parse_max_age,
    parse_name,
    parse_number_types,
    parse_optional_text,
    parse_port,
    parse_prefixes,
    parse_rate_text,
    parse_region,
    parse_store_url,
    parse_text,
    parse_thresholds,
    parse_timezone,
    parse_url_template,
    reduce_desk,
)

APP_NAME = "tcx-bridge"
ENV_PREFIX = "TCX_BRIDGE_"


class Key(NamedTuple):
    """One setting: its name, environment variable, default and parser.

    check: a further look at the parsed value that needs a library the notify
    executable never loads (phonenumbers for region); ``load_settings(checks=True)``
    runs it, as every CLI command does.
    """

    name: str
    default: Callable[[dict[str, Any], Mapping[str, str]], Any]
    parse: Callable[[str, Any], Any]
    help: str
    check: Callable[[Any], None] | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


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


def _const(value: Any) -> Callable[[dict[str, Any], Mapping[str, str]], Any]:
    return lambda _, __: value


KEYS: tuple[Key, ...] = (
    Key(
        "amqp_url",
        _const("amqp://guest:guest@localhost:5672/%2F"),
        parse_amqp_url,
        "broker URL, or several comma-separated (a cluster; later ones may be host:port); "
        "amqps:// verifies the server certificate",
    ),
    Key("ca_file", _const(None), parse_ca_file, "CA bundle for amqps:// (default: system CAs)"),
    Key("namespace", _const("tcx"), parse_name, "prefix of every exchange and queue name"),
    Key("exchange", lambda v, _: f"{v['namespace']}.events", parse_name, "the events exchange (topic)"),
    Key("desk", _default_desk, parse_desk, "this desk's id in routing keys (default: host name)"),
    Key("extension", _const(None), parse_extension, "the agent's 3CX extension"),
    Key("data_dir", _default_data_dir, parse_text, "outbox, logs and local stores"),
    Key(
        "publish_budget",
        _const(3.0),
        at_least(float, 0.1),
        "seconds a launch may spend on retries before it outboxes the event",
    ),
    Key("replay_batch", _const(20), at_least(int, 0), "outboxed events one launch replays at most"),
    Key(
        "log_max_bytes",
        _const(1_000_000),
        at_least(int, 10_000),
        "size of the notify log before it rotates",
    ),
    Key("region", _const("CH"), parse_region, "default region for national caller ids", check_region),
    Key("prefetch", _const(100), at_least(int, 1), "unacked messages a consumer holds at most"),
    Key("quorum", _const(False), parse_boolean, "declare consumer queues as quorum queues"),
    Key(
        "max_attempts",
        _const(5),
        at_least(int, 1),
        "deliveries of one message before it is dead-lettered",
    ),
    Key("assistant", _const("tcx.assistant.client.exe"), parse_text, "the 3CX Assistant client executable"),
    Key(
        "assistant_timeout",
        _const(15.0),
        at_least(float, 0.1),
        "seconds the Assistant may take to dial",
    ),
    Key(
        "assistant_process",
        _const("tcx.assistant.client.exe" if sys.platform == "win32" else None),
        parse_optional_text,
        "process name that must be running before a dial (default on Windows: tcx.assistant.client.exe; "
        "elsewhere none: no check)",
    ),
    Key(
        "dial_confirm_timeout",
        _const(20.0),
        at_least(float, 0.0),
        "seconds the agent waits for the Assistant's outbound call event to confirm a dial (0: off)",
    ),
    Key(
        "popup_command",
        _const(None),
        parse_optional_text,
        "command template for screen pops, e.g. 'crm-open {url}' (default: open the URL in a browser)",
    ),
    Key(
        "crm_lookup_url",
        _const(None),
        parse_url_template,
        "HTTP contact lookup, e.g. https://crm.example.com/api/contacts?phone={e164}",
    ),
    Key(
        "crm_fields",
        _const(parse_crm_fields("crm_fields", "name=name,company=company,email=email,url=url")),
        parse_crm_fields,
        "how the HTTP lookup's JSON maps to contact fields (dotted paths)",
    ),
    Key("crm_journal_url", _const(None), parse_url_template, "HTTP endpoint the call journal is POSTed to"),
    Key("crm_timeout", _const(5.0), at_least(float, 0.1), "seconds an HTTP CRM request may take"),
    Key("popup_ttl", _const(30.0), at_least(float, 1.0), "seconds a screen pop stays useful"),
    Key(
        "replay_interval",
        _const(30.0),
        at_least(float, 0.1),
        "seconds between the desk agent's outbox replays",
    ),
    Key(
        "metrics_port",
        _const(None),
        parse_port,
        "serve Prometheus /metrics, /healthz and /readyz on this port (consume, agent; default off)",
    ),
    Key("metrics_host", _const("127.0.0.1"), parse_text, "address the metrics port binds to"),
    Key("log_format", _const("text"), parse_log_format, "text, or json: one JSON object per log line"),
    Key(
        "service_level_seconds",
        _const(20.0),
        at_least(float, 1.0),
        "wallboard: an inbound call answered within this many seconds counts for the service level",
    ),
    Key(
        "desk_idle_minutes",
        _const(15.0),
        at_least(float, 1.0),
        "wallboard: a desk with no event this long is quiet",
    ),
    Key(
        "timezone",
        _const(None),
        parse_timezone,
        "wallboard: the day's time zone, e.g. Europe/Zurich (default: the machine's)",
    ),
    Key(
        "wallboard_token", _const(None), parse_optional_text, "wallboard: the token a non-local bind requires"
    ),
    Key(
        "wallboard_thresholds",
        _const(parse_thresholds("wallboard_thresholds", "waiting=2/5,wait=30/60,missed=5/10")),
        parse_thresholds,
        "wallboard: amber/red for calls waiting, longest wait (s) and missed calls",
    ),
    Key(
        "wallboard_lost_after",
        _const(1800.0),
        parse_duration,
        "wallboard: a call with no end event this long (minutes, or 90s, 2h) is shown as no end seen",
    ),
    Key(
        "wallboard_locale",
        _const(None),
        parse_locale,
        "wallboard: how times and numbers are written, e.g. de-CH, en-US (default: 24-hour clock, 1,234.5)",
    ),
    Key(
        "wallboard_hostnames",
        _const(""),
        parse_hostnames,
        "wallboard: host names browsers may use besides its bind address, e.g. wallboard.example.com",
    ),
    Key(
        "store_url",
        _const(None),
        parse_store_url,
        "consumers' store: postgresql://user@host/db (extra tcx-bridge[postgres]); unset: SQLite files",
    ),
    Key(
        "trust_user_id",
        _const(True),
        parse_boolean,
        "consumers: dead-letter an event or command without user_id, or from desk-<A> for another desk",
    ),
    Key(
        "dial_deny_types",
        _const(("PREMIUM_RATE",)),
        parse_number_types,
        "agent: number types never dialed (phonenumbers' names: PREMIUM_RATE, SHARED_COST, ...)",
    ),
    Key(
        "history_max_age",
        _const("7D"),
        parse_max_age,
        "how long the history stream keeps events (x-max-age: 7D, 12h; whole segments go)",
    ),
    Key(
        "history_max_bytes",
        _const(0),
        at_least(int, 0),
        "the history stream's size limit in bytes (x-max-length-bytes; 0: none but the age)",
    ),
    Key("dial_allow", _const(()), parse_prefixes, "agent: E.164 prefixes dialed; when set, only these"),
    Key(
        "dial_deny",
        _const(()),
        parse_prefixes,
        "agent: E.164 prefixes never dialed (the longest match decides)",
    ),
    Key(
        "dial_rate",
        _const("20/min"),
        parse_rate_text,
        "agent: dials a desk places at most, e.g. 20/min (0: no limit)",
    ),
)
KEYS_BY_NAME = {key.name: key for key in KEYS}
SECRET_KEYS = frozenset({"wallboard_token"})  # shown as **** by `config`
