"""Least privilege on the broker: the RabbitMQ definitions document of every tcx-bridge user.

``tcx-bridge access definitions`` writes it; ``rabbitmqctl import_definitions FILE``
or the management UI imports it. Users (namespace ``tcx``, events exchange E =
``tcx.events``, commands C = ``tcx.commands``, dead letters D = ``tcx.dead``):

    tcx-admin      ``tcx-bridge topology declare [--desk D[,EXT]]`` at roll-out: configure, write and read
                   on the namespace's resources only (no administrator tag, nothing else on the vhost)
    desk-<desk>    notify and the agent of one desk: publish to E only call.<kind>.<direction>.<desk>,
                   call.invalid.<desk> and dial.<status>.<desk> (only the kinds, directions and
                   statuses there are); consume its own queue tcx.desk.<desk>; publish its own dead
                   letters (key desk.<desk>) to D
    tcx-crm        consume crm: its queue; publish screen pops desk.*.popup to C (and to the unrouted
                   exchange, where a pop no agent is bound for is kept); its dead letters to D
    tcx-analytics  consume analytics: its queue; its dead letters to D
    tcx-wallboard  tcx-bridge wallboard: its queue; its dead letters to D
    tcx-webhooks   consume webhooks: read its targets' queues tcx.webhooks.<target> and their dead-letter
                   queues tcx.dead.webhooks.<target> (``webhooks replay``); publish to its targets' retry
                   exchanges tcx.retry.webhooks.<target>, and its dead letters (keys webhooks.<target>) to D
    tcx-dialer     CRM servers (tcx-bridge dial, callbacks dial, the wallboard's Call back): publish
                   desk.*.dial and ext.*.dial to C; read the dial results from the stream tcx.dial-results
    tcx-callbacks  consume callbacks: its queue; publish to E only callback.opened, callback.assigned and
                   callback.closed (no dial request: those go with the dialer's user); its dead letters to D
    tcx-privacy    tcx-bridge privacy forget/report: publish privacy.forget to C (every consumer and
                   desk agent erases the number in what it holds); read the dead-letter queues
                   tcx.dead.* (report browses them and requeues what it read)
    tcx-history    ``tcx-bridge history`` (people reading the events): read the stream tcx.history only

The consumers (tcx-crm, tcx-analytics, tcx-wallboard) may also read tcx.history (``consume
--from``, ``store rebuild``, the wallboard's day at start). Nobody writes the history: only the
broker copies events into it, and no user may write to ``amq.default``, the one way to a queue by name.

Only tcx-admin may configure anything: no other user declares, deletes or binds
a queue or an exchange, so none can declare a queue whose dead-lettering (which
the broker does without checking any permission) relays messages to a key it
may not publish. No user may write to another's retry exchange, or to any again
exchange (only the broker moves a retry back into a work queue), to ``amq.default`` (which would
reach every queue by name), or read a queue but its own. Passwords are generated
with ``secrets`` and stored as RabbitMQ's salted SHA-256 hashes; the clear ones
go to a password file only.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterable
from typing import Any, NamedTuple, get_args

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.events import DESK_CHARACTERS, FORGET_KEY, MAX_DESK, CallKind, DialStatus, Direction
from bridge.topology import dead_letter_key, dial_results_queue, history_queue, retry_exchange

HASHING = "rabbit_password_hashing_sha256"
DESK_USER = "desk-"  # a desk's broker user is desk-<desk>
NOTHING = "^$"  # a permission regex no resource name matches (names are never empty here)
ADMIN = "tcx-admin"
PRIVACY = "tcx-privacy"
SERVICES = (
    ADMIN,
    "tcx-crm",
    "tcx-analytics",
    "tcx-wallboard",
    "tcx-webhooks",
    "tcx-dialer",
    "tcx-callbacks",
    PRIVACY,
    "tcx-history",
)
CALLBACK_KEYS = r"^callback\.(opened|assigned|closed)$"  # the callbacks consumer's events, nothing else
WEBHOOK_TARGET = "[a-z0-9-]{1,64}"  # a webhook target's name (consumers/webhooks/settings.py)
_DESK = re.compile(rf"^[{DESK_CHARACTERS}]{{1,{MAX_DESK}}}$")  # the wire's own limits
_EXTENSION = re.compile(r"^[0-9A-Za-z_-]{1,32}$")
_KINDS = "(" + "|".join(kind for kind in get_args(CallKind) if kind != "invalid") + ")"
_DIRECTIONS = "(" + "|".join(get_args(Direction)) + ")"
_STATUSES = "(" + "|".join(get_args(DialStatus)) + ")"


def desk_of_user(user: str | None) -> str | None:
    """The desk a broker user speaks for (``desk-<desk>``); None for any other user."""
    if user and user.startswith(DESK_USER):
        return user[len(DESK_USER) :]
    return None


class Desk(NamedTuple):
    desk: str
    extension: str | None = None

    @property
    def user(self) -> str:
        return f"{DESK_USER}{self.desk}"


def parse_desk(text: str, where: str = "--desk") -> Desk:
    """``DESK`` or ``DESK,EXTENSION`` (a desks file line: also tab or space separated)."""
    parts = [part for part in re.split(r"[,\t ;]+", text.strip()) if part]
    if not parts or len(parts) > 2 or not _DESK.match(parts[0]):
        raise ConfigError(
            f"{where}: {text.strip()!r} is not a desk id ([A-Za-z0-9_-], up to 64) with an optional "
            "extension (DESK or DESK,EXTENSION)"
        )
    if len(parts) == 2 and not _EXTENSION.match(parts[1]):
        raise ConfigError(f"{where}: extension {parts[1]!r} of desk {parts[0]!r} is not an extension")
    return Desk(parts[0], parts[1] if len(parts) == 2 else None)


def read_desks(lines: Iterable[str], where: str) -> list[Desk]:
    """Desks from a file's lines: one per line, # comments and blank lines skipped."""
    found = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip().lstrip("\ufeff")
        if text:
            found.append(parse_desk(text, f"{where} line {number}"))
    return found


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def read_passwords(lines: Iterable[str]) -> dict[str, str]:
    """A password file's ``user<TAB>password`` lines."""
    found = {}
    for line in lines:
        user, tab, password = line.rstrip("\r\n").partition("\t")
        if tab and user and password:
            found[user] = password
    return found


def _any(*names: str) -> str:
    return "^(" + "|".join(names) + ")$"


def _q(name: str) -> str:
    return re.escape(name)


class Rights(NamedTuple):
    configure: str
    write: str
    read: str
    topics: dict[str, tuple[str, str]]  # exchange -> (write, read) routing/binding key regexes


def _dead_key(name: str) -> str:
    return _any(re.escape(dead_letter_key(name)))


def desk_rights(settings: Settings, desk: Desk) -> Rights:
    name = f"desk.{desk.desk}"
    events, dead = _q(settings.exchange), _q(settings.dead_exchange)
    d = re.escape(desk.desk)
    return Rights(
        configure=NOTHING,
        write=_any(events, dead, _q(retry_exchange(settings, name))),
        read=_any(_q(settings.queue(name))),
        topics={
            settings.exchange: (
                # call.invalid.<desk>: a malformed launch is published too, to the invalid route. Only
                # the kinds, directions and statuses there are: any other key routes nowhere, to the
                # unrouted queue that nothing consumes, which one desk could fill until the broker blocks
                _any(
                    rf"call\.{_KINDS}\.{_DIRECTIONS}\.{d}", rf"call\.invalid\.{d}", rf"dial\.{_STATUSES}\.{d}"
                ),
                NOTHING,
            ),
            settings.commands_exchange: (NOTHING, NOTHING),
            settings.dead_exchange: (_dead_key(name), NOTHING),
        },
    )


def admin_rights(settings: Settings) -> Rights:
    """Everything of the namespace (and the events exchange, which may be named on its own)."""
    mine = _any(rf"{_q(settings.namespace)}\..*", _q(settings.exchange))
    return Rights(configure=mine, write=mine, read=mine, topics={})


def service_rights(settings: Settings, user: str) -> Rights:
    commands, dead = _q(settings.commands_exchange), _q(settings.dead_exchange)
    if user == ADMIN:
        return admin_rights(settings)
    if user == "tcx-dialer":
        return Rights(
            configure=NOTHING,
            write=_any(commands),
            read=_any(_q(dial_results_queue(settings))),
            topics={
                settings.exchange: (NOTHING, NOTHING),
                settings.commands_exchange: (r"^(desk|ext)\.[^.]+\.dial$", NOTHING),
            },
        )
    if user == "tcx-history":
        return Rights(
            configure=NOTHING,
            write=NOTHING,
            read=_any(_q(history_queue(settings))),
            topics={settings.exchange: (NOTHING, NOTHING), settings.commands_exchange: (NOTHING, NOTHING)},
        )
    if user == PRIVACY:
        return Rights(
            configure=NOTHING,
            write=_any(commands),
            read=_any(rf"{dead}\..+"),
            topics={
                settings.exchange: (NOTHING, NOTHING),
                settings.commands_exchange: (_any(re.escape(FORGET_KEY)), NOTHING),
            },
        )
    if user == "tcx-webhooks":
        return webhooks_rights(settings)
    name = user.removeprefix("tcx-")
    write = [dead, _q(retry_exchange(settings, name))]  # its own retries, through the broker back to it
    topics = {
        settings.exchange: (NOTHING, NOTHING),
        settings.dead_exchange: (_dead_key(name), NOTHING),
    }
    if user == "tcx-crm":  # screen pops; a pop no agent is bound for is kept in the unrouted exchange
        write += [commands, _q(settings.unrouted_exchange)]
        topics[settings.commands_exchange] = (r"^desk\.[^.]+\.popup$", NOTHING)
    if user == "tcx-callbacks":  # its callback.* events, to the events exchange
        write += [_q(settings.exchange)]
        topics[settings.exchange] = (CALLBACK_KEYS, NOTHING)
    read = _any(_q(settings.queue(name)), _q(history_queue(settings)))  # its queue; the history to backfill
    return Rights(configure=NOTHING, write=_any(*write), read=read, topics=topics)


def webhooks_rights(settings: Settings) -> Rights:
    """Every target's queue, retries and dead letters: consumer names ``webhooks.<target>``."""
    target = rf"webhooks\.{WEBHOOK_TARGET}"
    ns = _q(settings.namespace)
    return Rights(
        configure=NOTHING,
        write=_any(_q(settings.dead_exchange), rf"{ns}\.retry\.{target}"),
        read=_any(rf"{ns}\.{target}", rf"{ns}\.dead\.{target}"),
        topics={
            settings.exchange: (NOTHING, NOTHING),
            settings.dead_exchange: (_any(target), NOTHING),
        },
    )


def check_unique(desks: list[Desk]) -> None:
    """A desk or an extension given twice is a mistake (two desks would share one's rights): refuse it."""
    seen_desks: set[str] = set()
    seen_extensions: dict[str, str] = {}
    for desk in desks:
        if desk.desk in seen_desks:
            raise ConfigError(f"desk {desk.desk!r} is given twice; give each desk once")
        seen_desks.add(desk.desk)
        if desk.extension is None:
            continue
        other = seen_extensions.get(desk.extension)
        if other is not None:
            raise ConfigError(
                f"extension {desk.extension!r} is given to desk {other!r} and desk {desk.desk!r}; "
                "an extension belongs to one desk"
            )
        seen_extensions[desk.extension] = desk.desk


def definitions(
    settings: Settings, desks: list[Desk], vhost: str, passwords: dict[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The definitions document and every user's clear password (kept ones from passwords, else new).

    Deterministic apart from the secrets: users in a fixed order, desks sorted.
    """
    check_unique(desks)
    ordered = sorted(desks, key=lambda desk: desk.desk)
    rights = [(user, service_rights(settings, user)) for user in SERVICES]
    rights += [(desk.user, desk_rights(settings, desk)) for desk in ordered]
    clear = {user: passwords.get(user) or secrets.token_urlsafe(24) for user, _ in rights}
    document: dict[str, Any] = {
        "rabbit_version": "3.10.0",
        "users": [
            {
                "name": user,
                "password_hash": password_hash(clear[user]),
                "hashing_algorithm": HASHING,
                "tags": [],
            }
            for user, _ in rights
        ],
        "vhosts": [{"name": vhost}],
        "permissions": [
            {"user": user, "vhost": vhost, "configure": r.configure, "write": r.write, "read": r.read}
            for user, r in rights
        ],
        "topic_permissions": [
            {"user": user, "vhost": vhost, "exchange": exchange, "write": write, "read": read}
            for user, r in rights
            for exchange, (write, read) in r.topics.items()
        ],
    }
    return document, clear
