"""Helpers shared by the CLI modules: settings for a command, our errors as click errors.

click is used only in the CLI layer (this module, cli.py and cli_calls.py).

The root group's setting flags (``--namespace``, ``--store-url``, ``--metrics-port``, ...)
are also accepted after the command they apply to: :class:`SettingsGroup` copies them
onto every command it hands out (listed in that command's ``--help``), unless the
command has an option of the same name (``dial --desk`` is the desk that dials) or
is marked :func:`without_settings`. The same setting given before and after the
command with different values is a usage error naming both.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

import click

from bridge.config import Loaded, Settings, load_settings
from bridge.errors import ConfigError, TcxBridgeError, path_problem
from bridge.plugins import COMMANDS, load, origin, registered
from bridge.redact import log_numbers, redact_logs, redact_text

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Our errors, and the file system's, as one-line click errors; anything else is a bug (traceback)."""
    try:
        yield
    except TcxBridgeError as error:
        raise click.ClickException(redact_text(str(error))) from None
    except OSError as error:
        if error.filename is None:
            raise
        raise click.ClickException(path_problem(error, error.filename)) from None


def loaded(ctx: click.Context) -> Loaded:
    """The effective settings for this invocation (flags from the group), checked once (region too)."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "loaded" not in obj:
        with friendly_errors():
            obj["loaded"] = load_settings(obj.get("flags", {}), checks=True)
        if obj["loaded"].settings.log_format == "json":
            use_json_logs()
        log_numbers(obj["loaded"].settings.log_numbers)
    result: Loaded = obj["loaded"]
    return result


# the attributes every LogRecord has; anything else was passed with extra= and is a field
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the fields passed with extra=."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        document |= {key: value for key, value in record.__dict__.items() if key not in _STANDARD}
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(*, verbose: bool = False, stream: TextIO | None = None) -> None:
    """The commands' logging: a line per record on stream (stderr), URLs redacted and numbers masked.

    pika speaks only with --verbose. What no line shows is not collected for each record
    (the caller's file and line, the thread, the process: the logging HOWTO's optimisations),
    which is a third of the cost of a consumer's line per message.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=stream or sys.stderr
    )
    for handler in logging.getLogger().handlers:
        redact_logs(handler)  # no password of a URL in any log line
    if not verbose:
        logging.getLogger("pika").setLevel(logging.CRITICAL)
        logging._srcfile = None  # the HOWTO's switch: no sys._getframe walk
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def use_json_logs() -> None:
    """Switch the root handlers (set up by the group) to JSON lines."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())


def settings_of(ctx: click.Context) -> Settings:
    return loaded(ctx).settings


def with_settings(command: F) -> F:
    """Pass the effective settings as the first argument; our errors become ClickExceptions."""

    @functools.wraps(command)
    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        settings = settings_of(ctx)
        with friendly_errors():
            return ctx.invoke(command, settings, *args, **kwargs)

    return wrapper  # type: ignore[return-value]  # click's decorators keep the signature


SETTING_PREFIX = "setting__"  # the copies' parameter names: setting__<setting name>
_SETTINGS_FREE: set[click.Command] = set()


class SettingOption(click.Option):
    """A root flag that sets a setting (its long name: ``--store-url`` sets store_url)."""

    @property
    def setting(self) -> str:
        long = next(opt for opt in self.opts if opt.startswith("--"))
        return long[2:].replace("-", "_")


def without_settings(command: F) -> F:
    """Mark a command that reads no settings: the root's setting flags are not copied onto it."""
    _SETTINGS_FREE.add(command)  # type: ignore[arg-type]  # F is a click.Command here
    return command


class SettingsGroup(click.Group):
    """The root group: its own commands and those registered in ``tcx_bridge.commands``; each command
    it hands out also takes the root's setting flags. A registration that fails to load becomes a
    command that says why in one line (and says so in ``--help``); the others still work."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(registered(COMMANDS)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name) or self._registered(cmd_name)
        if command is not None:
            accept_settings(command, [p for p in self.params if isinstance(p, SettingOption)])
        return command

    def _registered(self, name: str) -> click.Command | None:
        point = registered(COMMANDS).get(name)
        if point is None:
            return None
        try:
            command = load(point, "command")
        except ConfigError as error:
            command = broken_command(name, str(error))
        if not isinstance(command, click.Command):
            package, version = origin(point)
            problem = f"command {name!r} from {package} {version} is {point.value!r}, not a click command"
            command = broken_command(name, problem)
        self.add_command(command, name)
        return command


def broken_command(name: str, problem: str) -> click.Command:
    """A command standing in for a registration that cannot be loaded: it says why, exit 1."""

    def fail(**_: object) -> None:
        raise click.ClickException(problem)

    return without_settings(
        click.Command(
            name,
            callback=fail,
            help=f"BROKEN: {problem}",
            short_help=f"BROKEN: {problem}",
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        )
    )


def accept_settings(command: click.Command, options: list[SettingOption]) -> None:
    """Copy the setting options onto command (each command of a group), once."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            accept_settings(sub, options)
        return
    if command in _SETTINGS_FREE or getattr(command, "_accepts_settings", False):
        return
    taken = {opt for param in command.params for opt in param.opts + param.secondary_opts}
    added: list[str] = []
    for option in options:
        if taken.intersection(option.opts):
            continue  # the command's own option of that name wins (dial --desk)
        clone = copy.copy(option)
        clone.name = SETTING_PREFIX + option.setting
        clone.opts = [opt for opt in option.opts if opt.startswith("--")]
        clone.secondary_opts = []
        command.params.append(clone)
        added.append(option.setting)
    command.callback = _taking_settings(command, added)
    command._accepts_settings = True  # type: ignore[attr-defined]  # our mark: copied once


def _taking_settings(command: click.Command, settings: list[str]) -> Callable[..., Any]:
    original = command.callback
    assert original is not None

    @functools.wraps(original)
    def callback(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(SETTING_PREFIX + name) for name in settings}
        _merge_flags(click.get_current_context(), given)
        return original(*args, **kwargs)

    return callback


def _merge_flags(ctx: click.Context, given: dict[str, Any]) -> None:
    """Settings given after the command join the root's flags; two different values are an error."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    flags: dict[str, Any] = obj.setdefault("flags", {})
    for name, value in given.items():
        if value is None:
            continue
        before = flags.get(name)
        if before is not None and before != value:
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(
                f"{flag} is given twice: {before!r} before {ctx.info_name!r} and {value!r} after it; "
                "give it once"
            )
        flags[name] = value
        obj.pop("loaded", None)  # loaded again with this flag
