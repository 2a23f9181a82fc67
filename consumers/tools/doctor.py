"""``tcx-bridge doctor``: the checks an admin runs first on a new desk or server.

Each check gives one Check: ok or not, what was found, and (when not ok) the
fix. Nothing here prints or exits; the CLI does. Checks: the configuration, the
CA file (when set), each broker address (reachable, login, vhost, events exchange), the data dir and the
outbox, a PostgreSQL store (reachable, schema), the region, the 3CX Assistant
(executable, process), the dial policy in force, and the path of ``tcx-bridge-notifyw`` to paste into the
Assistant.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from bridge.config import Loaded, config_path, redact_url, split_urls
from bridge.errors import (
    BrokerCertificateError,
    BrokerRefusedError,
    StoreUnavailableError,
    TcxBridgeError,
    check_directory,
)
from bridge.handoff import DIRECTORY
from bridge.redact import redact_text
from consumers.agent.assistant import assistant_running
from consumers.agent.settings import AGENT

ASSISTANT_PLACES = (
    r"C:\Program Files\3CXPhone for Windows\tcx.assistant.client.exe",
    r"C:\Program Files (x86)\3CX Assistant\tcx.assistant.client.exe",
    r"%LOCALAPPDATA%\3CX Assistant\tcx.assistant.client.exe",
)


class Check(NamedTuple):
    ok: bool
    what: str
    fix: str = ""


def run_checks(loaded: Loaded, environ: dict[str, str] | None = None) -> Iterator[Check]:
    """Every check, in the order an admin would fix things."""
    environ = dict(os.environ if environ is None else environ)
    yield _configuration(loaded, environ)
    yield _region(loaded)
    if loaded.settings.ca_file:
        yield _ca_file(loaded.settings.ca_file)
    for url in split_urls(loaded.settings.amqp_url):
        yield _broker(loaded, url)
    yield from _data_dir(loaded)
    if loaded.settings.store_url:
        yield _store(loaded)
    yield from _assistant(loaded)
    yield _dial_policy(loaded)
    yield _notifyw()


def _store(loaded: Loaded) -> Check:
    """The PostgreSQL store answers, takes our login and holds a schema this code knows."""
    shown = redact_url(loaded.settings.store_url or "")
    try:
        import consumers.store.postgres  # noqa: F401  # the driver: a missing one is a finding of its own
        from consumers.store.core import open_store
        from consumers.store.schema import LATEST, current_version

        store = open_store(loaded.settings, "", migrate=False)  # a check changes nothing
        try:
            version = current_version(store)
        finally:
            store.close()
    except ImportError:
        return Check(
            False, f"store {shown}: the PostgreSQL driver is missing", "pip install 'tcx-bridge[postgres]'"
        )
    except TcxBridgeError as error:
        fix = (
            "start PostgreSQL, or fix store_url"
            if isinstance(error, StoreUnavailableError)
            else "fix store_url (database, user, password)"  # refused for good: no such database or role
        )
        return Check(False, f"store {shown}: {redact_text(str(error), loaded.settings.store_url or '')}", fix)
    if version > LATEST:
        return Check(False, f"store {shown}: schema version {version}, newer than this tcx-bridge ({LATEST})",
                     "upgrade tcx-bridge on this host")  # fmt: skip
    state = (
        "not created yet (the consumers create it at start)" if version == 0 else f"schema version {version}"
    )
    return Check(True, f"store {shown}: reachable, {state}")


def _configuration(loaded: Loaded, environ: dict[str, str]) -> Check:
    path, explicit = config_path(environ)
    where = f"file {path}" if path is not None and path.exists() else "no config file"
    if path is not None and not path.exists() and not explicit:
        where += f" (would be {path})"
    from_env = sorted(key for key, source in loaded.sources.items() if source.startswith("env"))
    from_flags = sorted(key for key, source in loaded.sources.items() if source == "flag")
    parts = [
        where,
        f"{len(from_env)} from the environment" + (f" ({', '.join(from_env)})" if from_env else ""),
    ]
    if from_flags:
        parts.append(f"flags: {', '.join(from_flags)}")
    return Check(True, "configuration is valid: " + "; ".join(parts))


def _ca_file(path: str) -> Check:
    """The CA file is a PEM bundle (checked also when amqp_url does not use TLS yet)."""
    from bridge.transport import parameters

    try:
        parameters("amqps://localhost/", ca_file=path)
    except TcxBridgeError as error:
        return Check(False, str(error), "convert it: openssl x509 -inform der -in CA.der -out CA.pem")
    return Check(True, f"CA file {path!r} is a PEM CA bundle")


def _region(loaded: Loaded) -> Check:
    """Shown, not checked again: the CLI's load checked it against phonenumbers (bridge.keys)."""
    return Check(True, f"region {loaded.settings.region} (national numbers are read in it)")


def _broker(loaded: Loaded, url: str) -> Check:
    from bridge.transport import Broker

    settings = loaded.settings
    shown = redact_url(url)
    try:
        with Broker(url, ca_file=settings.ca_file, timeout=5) as broker:
            if not broker.exchange_exists(settings.exchange):
                return Check(
                    False,
                    f"broker {shown}: reachable, login accepted, but the events exchange "
                    f"{settings.exchange!r} does not exist",
                    "run `tcx-bridge topology declare` once (as a user allowed to configure)",
                )
    except BrokerCertificateError as error:
        fix = (
            "put the host name the broker's certificate was issued for in amqp_url"
            if error.wrong_host
            else "set ca_file (TCX_BRIDGE_CA_FILE) to the CA that issued the broker's certificate"
        )
        return Check(False, f"broker {shown}: {redact_text(str(error), url)}", fix)
    except BrokerRefusedError as error:
        return Check(
            False,
            f"broker {shown}: {redact_text(str(error), url)}",
            "fix the user, password or vhost in amqp_url",
        )
    except TcxBridgeError as error:
        return Check(False, f"broker {shown}: {error}", "start the broker or fix the host and port")
    return Check(True, f"broker {shown}: reachable, login accepted, vhost and {settings.exchange!r} exist")


def _data_dir(loaded: Loaded) -> Iterator[Check]:
    from bridge.outbox import Outbox

    settings = loaded.settings
    data = Path(settings.data_dir)
    try:
        check_directory(data)
        data.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data, prefix=".doctor-"):
            pass
    except (OSError, TcxBridgeError) as error:
        yield Check(
            False,
            f"data dir {str(data)!r} is not usable: {error}",
            "point TCX_BRIDGE_DATA_DIR at a writable directory",
        )
        return
    yield Check(True, f"data dir {data} exists and is writable")
    yield from _private(data, settings.outbox_dir, data / DIRECTORY)
    outbox = Outbox(settings.outbox_dir)
    paths = outbox.paths()
    if not paths:
        yield Check(True, "outbox is empty")
    else:
        age = time.time() - paths[0].stat().st_mtime
        yield Check(
            age < 300,
            f"outbox holds {len(paths)} event(s), the oldest {age / 60:.0f} min old",
            ""
            if age < 300
            else "they wait for the broker: fix the broker checks above, then `tcx-bridge spool flush`",
        )
    refused = outbox.refused()
    if refused:
        yield Check(
            False,
            f"{len(refused)} event(s) refused for good by the broker, set aside in {outbox.refused_dir} "
            f"(the latest: {refused[-1].reason})",
            "fix the cause (the user's rights, the desk setting), then `tcx-bridge spool retry --all`; "
            "`tcx-bridge spool list` shows each, `tcx-bridge spool drop ID` deletes one",
        )


def _private(data: Path, outbox: Path, agent: Path) -> Iterator[Check]:
    """Whether another user could write where the desk keeps its events (POSIX): one who can puts
    events in the outbox that this desk publishes as its own, or replaces the agent's hand-off files.
    Each directory that fails is a line of its own; so are outbox files another user owns."""
    if os.name != "posix":
        return  # Windows: the profile's ACL keeps %LOCALAPPDATA% to its user
    me = os.geteuid()
    failed = False
    for directory in (data, outbox, agent):
        try:
            found = directory.stat()
        except OSError:
            continue  # not made yet: made 0700 (outbox, agent) or with the umask (data dir) when needed
        if found.st_uid != me:
            failed = True
            yield Check(
                False,
                f"{directory} belongs to uid {found.st_uid}, not to uid {me}: its owner may write there",
                f"sudo chown {me} {directory} (or remove it: tcx-bridge makes it again)",
            )
        elif found.st_mode & 0o022:
            failed = True
            yield Check(
                False,
                f"other users may write to {directory} (mode {found.st_mode & 0o777:o}): they could put "
                "files there that this desk takes as its own",
                f"chmod go-w {directory}",
            )
    foreign = _foreign_files(outbox, me)
    if foreign:
        failed = True
        yield Check(
            False,
            f"{len(foreign)} file(s) in the outbox belong to another user (the first: {foreign[0]}): "
            "events this desk would publish as its own",
            "look at them (`ls -ln`, `tcx-bridge spool list`) and delete what this desk did not write",
        )
    if not failed:
        yield Check(True, f"only this user may write to {data}, its outbox and its agent directory")


def _foreign_files(outbox: Path, me: int) -> list[str]:
    """The outbox's files another user owns (an outbox others could write to may hold them)."""
    try:
        entries = list(os.scandir(outbox))
    except OSError:
        return []
    found = []
    for entry in entries:
        try:
            if entry.stat(follow_symlinks=False).st_uid != me:
                found.append(entry.name)
        except OSError:
            continue
    return sorted(found)


def _assistant(loaded: Loaded) -> Iterator[Check]:
    options = AGENT.of(loaded.settings)
    found = shutil.which(options.assistant) or (
        options.assistant if Path(options.assistant).is_file() else None
    )
    if found is None:
        places = [os.path.expandvars(place) for place in ASSISTANT_PLACES]
        found = next((place for place in places if Path(place).is_file()), None)
        if found is not None:
            yield Check(False, f"3CX Assistant found at {found}, but assistant is {options.assistant!r}",
                        f"set TCX_BRIDGE_ASSISTANT={found}")  # fmt: skip
        else:
            yield Check(
                False,
                f"3CX Assistant {options.assistant!r} not found (also not in the usual places)",
                "install the 3CX Assistant, or set TCX_BRIDGE_ASSISTANT to the full path of "
                "tcx.assistant.client.exe",
            )
    else:
        yield Check(True, f"3CX Assistant: {found}")
    if options.assistant_process:
        running = assistant_running(options.assistant_process)
        yield Check(
            running,
            f"process {options.assistant_process} is {'running' if running else 'not running'}",
            "" if running else "start the 3CX Assistant and log in (dials fail until then)",
        )


def _dial_policy(loaded: Loaded) -> Check:
    """The dial policy the agent enforces on this desk, as it reads the settings."""
    from consumers.agent.dial_policy import DialPolicy

    try:
        policy = DialPolicy.of(loaded.settings)
    except TcxBridgeError as error:
        return Check(False, f"dial policy: {error}", "fix dial_deny_types or dial_rate")
    return Check(True, "dial policy: " + "; ".join(policy.describe()))


def _notifyw() -> Check:
    from bridge.simulate import find_script

    for name in ("tcx-bridge-notifyw", "tcx-bridge-notify"):
        found = find_script(name)
        if found:
            exe = found + (".exe" if sys.platform == "win32" and not found.endswith(".exe") else "")
            return Check(True, f'paste into the 3CX Assistant\'s "Call CRM Executable" box: {exe}')
    return Check(
        False, "tcx-bridge-notifyw is not installed next to this Python", "pip install tcx-bridge again"
    )
