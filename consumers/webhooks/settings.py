"""The webhooks' settings: the ``[[webhooks]]`` targets and the desk -> agent name map.

Declared here, in the consumer's own room (bridge.sections), registered in
pyproject.toml's ``tcx_bridge.settings``::

    [[webhooks]]
    name = "helpdesk"                      # [a-z0-9-], unique; queue <namespace>.webhooks.helpdesk
    url = "https://zammad.example/api/v1/cti/TOKEN"
    events = ["call.*.inbound.*", "dial.*.*"]   # routing-key patterns, bound as they are
    format = "zammad"                      # native | cloudevents | zammad
    secret_file = "/etc/tcx-bridge/helpdesk.secret"   # or secret = "whsec_…"

    webhook_agents = { "DESK-07" = "Alice Martin" }     # Zammad's user[]

Every target key but name and url has a default (:class:`Target`). A target's
secret comes from ``TCX_BRIDGE_WEBHOOK_<NAME>_SECRET`` (NAME upper-cased, ``-`` as
``_``), else ``secret``, else ``secret_file``; one secret, or two separated by a
space or a new line while rotating (both signatures are sent). It is read when
the consumer starts (:func:`secrets_of`), not at load.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from bridge.errors import ConfigError
from bridge.keys import Key, const
from bridge.sections import Section
from consumers.webhooks.signing import check_secret

FORMATS = ("native", "cloudevents", "zammad")
Format = Literal["native", "cloudevents", "zammad"]
_NAME = re.compile(r"^[a-z0-9-]{1,64}$")
_PATTERN = re.compile(r"^(?:[A-Za-z0-9_-]+|\*|#)(?:\.(?:[A-Za-z0-9_-]+|\*|#))*$")
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")  # an HTTP token
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "webhook-id", "webhook-timestamp", "webhook-signature"}
)


class Target(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[[webhooks]]`` table, parsed: where, what, how, and how hard to try."""

    name: str
    url: str
    events: tuple[str, ...] = ("call.#",)
    format: Format = "native"
    secret: str | None = None
    secret_file: str | None = None
    timeout: float = 5.0  # seconds for one request, connect to last byte
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    concurrency: int = 4  # requests in flight at most (calls in parallel; one call's events in order)
    retry_for: float = 4 * 3600.0  # seconds of retrying a transient failure, then dead-lettered
    retry_base: float = 1.0  # seconds: the first retry's delay, doubled each time (with jitter)
    retry_max: float = 600.0  # seconds: the longest delay between two tries
    disable_after: int = 6  # failures in a row (within failure_window) that pause the target
    failure_window: float = 60.0
    resume_after: float = 300.0  # seconds a paused target waits before it tries again by itself
    max_backlog: int = 100_000  # messages kept while paused; the oldest beyond it are dead-lettered
    allow_private: bool = False  # loopback, link-local and private addresses (SSRF guard)
    http2: bool = False  # offer HTTP/2 (needs the h2 package: pip install "httpx[http2]")


class Targets(tuple[Target, ...]):
    """The targets, shown by ``tcx-bridge config`` without secrets or URL paths (Zammad's holds its token)."""

    def __str__(self) -> str:
        from urllib.parse import urlsplit

        shown = []
        for target in self:
            parts = urlsplit(target.url)
            host = parts.netloc.rpartition("@")[2]
            shown.append(f"{target.name}={parts.scheme}://{host}/… ({target.format})")
        return ", ".join(shown)


class WebhooksOptions(msgspec.Struct, frozen=True, kw_only=True):
    """The section's options (``WEBHOOKS.of(settings)``)."""

    webhooks: tuple[Target, ...]
    webhook_agents: dict[str, str]


def _check_target(label: str, target: Target) -> None:
    """The rules msgspec's types do not say: names, URL, patterns, numbers, headers."""
    where = f"{label} {target.name!r}"
    if not _NAME.match(target.name):
        raise ConfigError(f"{label}: name {target.name!r} is not a target name; use 1 to 64 of a-z 0-9 -")
    if not re.match(r"^https?://[^/\s]+", target.url):
        raise ConfigError(f"{where}: url {target.url!r} is not an http:// or https:// URL")
    if not target.events:
        raise ConfigError(f"{where}: events is empty; give routing-key patterns such as 'call.#'")
    for pattern in target.events:
        if not _PATTERN.match(pattern):
            raise ConfigError(
                f"{where}: event pattern {pattern!r} is not a routing-key pattern like call.*.*.*"
            )
    numbers = {
        "timeout": (target.timeout, 0.01),
        "concurrency": (target.concurrency, 1),
        "retry_for": (target.retry_for, 0.0),
        "retry_base": (target.retry_base, 0.001),
        "retry_max": (target.retry_max, 0.001),
        "disable_after": (target.disable_after, 1),
        "failure_window": (target.failure_window, 0.001),
        "resume_after": (target.resume_after, 0.01),
        "max_backlog": (target.max_backlog, 1),
    }
    for key, (value, low) in numbers.items():
        if value < low:
            raise ConfigError(f"{where}: {key} = {value!r} is too small; give at least {low}")
    for header in target.headers:
        if not _HEADER.match(header) or header.lower() in _RESERVED_HEADERS:
            raise ConfigError(
                f"{where}: header {header!r} may not be set (a bad name, or one tcx-bridge sets)"
            )


def parse_targets(label: str, value: Any) -> tuple[Target, ...]:
    """``[[webhooks]]`` tables (from TOML), or a JSON array of them (from TCX_BRIDGE_WEBHOOKS)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            raise ConfigError(f"{label}: {value[:80]!r} is not a JSON array of webhook tables") from None
    if not isinstance(value, list):
        raise ConfigError(f"{label}: {value!r} is not a list of [[webhooks]] tables")
    targets = []
    for number, table in enumerate(value, start=1):
        if not isinstance(table, dict):
            raise ConfigError(f"{label}: entry {number} ({table!r}) is not a table")
        try:
            target = msgspec.convert(table, Target, strict=False)
        except msgspec.ValidationError as error:
            named = table.get("name", number)
            raise ConfigError(f"{label}: webhook {named!r}: {error}") from None
        _check_target(label, target)
        targets.append(target)
    names = [target.name for target in targets]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"{label}: webhook name {twice[0]!r} is given twice; give each target once")
    return Targets(targets)


def parse_agents(label: str, value: Any) -> dict[str, str]:
    """Desk -> agent name: a TOML table, or ``DESK=Name,DESK=Name`` from the environment."""
    if isinstance(value, str):
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        bad = [item for item in pairs if not item[1] or not item[0].strip() or not item[2].strip()]
        if bad:
            raise ConfigError(f"{label}: {''.join(bad[0])!r} is not DESK=Agent Name")
        return {desk.strip(): name.strip() for desk, _, name in pairs}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in value.items()
    ):
        raise ConfigError(f'{label}: {value!r} is not a table of desk = "Agent Name"')
    return {desk: name.strip() for desk, name in value.items()}


def secret_env(target: Target) -> str:
    """The environment variable that holds a target's secret."""
    return f"TCX_BRIDGE_WEBHOOK_{target.name.upper().replace('-', '_')}_SECRET"


def secrets_of(target: Target, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The target's signing secrets (one, or two while rotating); () when none is configured."""
    environ = os.environ if environ is None else environ
    variable = secret_env(target)
    if environ.get(variable, "").strip():
        text, where = environ[variable], variable
    elif target.secret:
        text, where = target.secret, f"secret of webhook {target.name!r}"
    elif target.secret_file:
        try:
            text = Path(target.secret_file).read_text(encoding="utf-8-sig")
        except OSError as error:
            raise ConfigError(
                f"secret_file {target.secret_file!r} of webhook {target.name!r} cannot be read: "
                f"{error.strerror}"
            ) from None
        where = f"secret_file {target.secret_file!r}"
    else:
        return ()
    found = tuple(text.split())
    if not 1 <= len(found) <= 2:
        raise ConfigError(f"{where}: give one whsec_ secret, or two while rotating (found {len(found)})")
    for secret in found:
        check_secret(secret, where)
    return found


WEBHOOKS = Section(
    "webhooks",
    (
        Key("webhooks", const(()), parse_targets, "[[webhooks]] targets (docs/webhooks.md)"),
        Key("webhook_agents", const({}), parse_agents, "desk -> agent name, Zammad's user[]"),
    ),
    WebhooksOptions,
)


def targets_of(settings: Any) -> tuple[Target, ...]:
    """The configured targets of loaded settings."""
    options: WebhooksOptions = WEBHOOKS.of(settings)
    return options.webhooks


def target_named(settings: Any, name: str) -> Target:
    """One configured target; ConfigError naming the known ones."""
    for target in targets_of(settings):
        if target.name == name:
            return target
    known = ", ".join(target.name for target in targets_of(settings)) or "none configured"
    raise ConfigError(f"no webhook target {name!r}; configured: {known}")
