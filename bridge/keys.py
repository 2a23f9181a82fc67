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
    parse_desk,
    parse_extension,
    parse_handoff_endpoint,
    parse_log_format,
    parse_log_numbers,
    parse_max_age,
    parse_name,
    parse_port,
    parse_region,
    parse_retention,
    parse_store_url,
    parse_text,
    parse_timezone,
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
    secret: bool = False  # shown as **** by `tcx-bridge config`

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


def const(value: Any) -> Callable[[dict[str, Any], Mapping[str, str]], Any]:
    """A Key default that is always value."""
    return lambda _, __: value


KEYS: tuple[Key, ...] = (
    Key(
        "amqp_url",
        const("amqp://guest:guest@localhost:5672/%2F"),
        parse_amqp_url,
        "broker URL, or several comma-separated (a cluster; later ones may be host:port); "
        "amqps:// verifies the server certificate",
    ),
    Key("ca_file", const(None), parse_ca_file, "CA bundle for amqps:// (default: system CAs)"),
    Key("namespace", const("tcx"), parse_name, "prefix of every exchange and queue name"),
    Key("exchange", lambda v, _: f"{v['namespace']}.events", parse_name, "the events exchange (topic)"),
    Key("desk", _default_desk, parse_desk, "this desk's id in routing keys (default: host name)"),
    Key("extension", const(None), parse_extension, "the agent's 3CX extension"),
    Key("data_dir", _default_data_dir, parse_text, "outbox, logs and local stores"),
    Key(
        "publish_budget",
        const(3.0),
        at_least(float, 0.1),
        "seconds a launch may spend on retries before it outboxes the event",
    ),
    Key(
        "handoff_timeout",
        const(0.025),
        at_least(float, 0.0),
        "seconds a launch waits for the running desk agent to take its event before it publishes "
        "itself (0: never hand over)",
    ),
    Key(
        "handoff_endpoint",
        const("auto"),
        parse_handoff_endpoint,
        "the desk fast path's endpoint: unix (a socket only this user reaches), tcp (127.0.0.1 with a "
        "secret drawn at each agent start), auto: unix where the platform has it (Linux), else tcp",
    ),
    Key("replay_batch", const(20), at_least(int, 0), "outboxed events one launch replays at most"),
    Key(
        "log_max_bytes",
        const(1_000_000),
        at_least(int, 10_000),
        "size of the notify log before it rotates",
    ),
    Key("region", const("CH"), parse_region, "default region for national caller ids", check_region),
    Key("prefetch", const(500), at_least(int, 1), "unacked messages a consumer holds at most"),
    Key("quorum", const(False), parse_boolean, "declare consumer queues as quorum queues"),
    Key(
        "max_attempts",
        const(5),
        at_least(int, 1),
        "deliveries of one message before it is dead-lettered",
    ),
    Key("popup_ttl", const(30.0), at_least(float, 1.0), "seconds a screen pop stays useful"),
    Key(
        "metrics_port",
        const(None),
        parse_port,
        "serve Prometheus /metrics, /healthz and /readyz on this port (consume, agent; default off)",
    ),
    Key("metrics_host", const("127.0.0.1"), parse_text, "address the metrics port binds to"),
    Key("log_format", const("text"), parse_log_format, "text, or json: one JSON object per log line"),
    Key(
        "log_numbers",
        const("masked"),
        parse_log_numbers,
        "masked: log phone numbers as +41 •• ••• 35 35 (country code and last 4 digits); full: as they are",
    ),
    Key(
        "retention_logs",
        const(30 * 86400.0),
        parse_retention,
        "rotated log files (notify.log.1, ...) are deleted this long after their last line "
        "(days, or 12h; 0: kept)",
    ),
    Key(
        "retention_dead",
        const(14 * 86400.0),
        parse_retention,
        "dead letters are dropped this long after they arrived (x-message-ttl of the dead-letter queues "
        "topology declare creates; days, or 12h; 0: kept)",
    ),
    Key(
        "timezone",
        const(None),
        parse_timezone,
        "wallboard: the day's time zone, e.g. Europe/Zurich (default: the machine's)",
    ),
    Key(
        "store_url",
        const(None),
        parse_store_url,
        "consumers' store: postgresql://user@host/db (extra tcx-bridge[postgres]); unset: SQLite files",
    ),
    Key(
        "trust_user_id",
        const(True),
        parse_boolean,
        "consumers: dead-letter an event or command without user_id, or from desk-<A> for another desk",
    ),
    Key(
        "history_max_age",
        const("7D"),
        parse_max_age,
        "how long the history stream keeps events (x-max-age: 7D, 12h; whole segments go)",
    ),
    Key(
        "history_max_bytes",
        const(0),
        at_least(int, 0),
        "the history stream's size limit in bytes (x-max-length-bytes; 0: none but the age)",
    ),
)
KEYS_BY_NAME = {key.name: key for key in KEYS}
SECRET_KEYS = frozenset(key.name for key in KEYS if key.secret)  # shown as **** by `config`
