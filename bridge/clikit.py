"""Helpers shared by the CLI modules: settings for a command, our errors as click errors.

click is used only in the CLI layer (this module, cli.py and cli_calls.py).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from bridge.config import Loaded, Settings, load_settings
from bridge.errors import TcxBridgeError, path_problem
from bridge.redact import redact_text

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
    """The effective settings for this invocation (flags from the group)."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "loaded" not in obj:
        with friendly_errors():
            obj["loaded"] = load_settings(obj.get("flags", {}))
        if obj["loaded"].settings.log_format == "json":
            use_json_logs()
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
