"""Where the notify executable's lines go: a size-bounded log file, and stderr for a person.

The executable has no console on Windows (the gui-script): it logs to a file in
the platform log directory, and to stderr only errors and, when someone can see
it, the launch's one-line outcome (:class:`ConsoleHandler`). Imported on every
launch, so it stays on the stdlib's ``logging`` (not ``logging.handlers``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from bridge.config import Settings
from bridge.envelope import OutgoingMessage
from bridge.redact import log_numbers, mask_numbers, redact_logs
from bridge.text import printable

logger = logging.getLogger("bridge.notify")


class BoundedFileHandler(logging.FileHandler):
    """Append to a log file; past max_bytes, rename it to ``.1`` (keeping one old file).

    logging.handlers.RotatingFileHandler would do, but importing logging.handlers
    (with pickle, queue, socket) costs every launch milliseconds. Each launch logs a
    few lines, so checking the size once, when the file is opened, is enough.
    """

    def __init__(self, filename: str, max_bytes: int) -> None:
        try:
            if os.path.getsize(filename) > max_bytes:
                os.replace(filename, filename + ".1")
        except OSError:  # missing (fine) or held open by another launch (rotate next time)
            pass
        super().__init__(filename, encoding="utf-8", delay=True)

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record; a log file that cannot be opened is skipped (FileHandler would raise)."""
        try:
            super().emit(record)
        except OSError:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802  # logging's name
        """A log file that cannot be opened or written is skipped: logging never fails a launch."""
        self.setLevel(logging.CRITICAL + 1)


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in typeshed
    """stderr: every error, and the launch's one-line outcome for a person to see.

    The outcome line (``published ...`` / ``outboxed ...``) shows on a terminal,
    and an ``outboxed`` one shows anywhere, unless an error line already said why
    the event waits. Under the gui-script there is no stderr, so no handler.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        try:
            self.terminal = stream.isatty()
        except (AttributeError, ValueError, OSError):  # a closed or odd stream
            self.terminal = False
        self.spoken = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.spoken = True
            return super().filter(record) is not False
        if getattr(record, "outcome", False):
            return self.terminal or (record.levelno >= logging.WARNING and not self.spoken)
        return False


class ConsoleFormatter(logging.Formatter):
    """``tcx-bridge-notify: <message>``; a LOST line starts with LOST, for scripts to find."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if text.startswith("LOST ") else f"tcx-bridge-notify: {text}"


FORMAT = "%(asctime)s %(process)d %(levelname)s %(message)s"


def write_for(settings: Settings, pid: int, lines: list[tuple[int, str]]) -> None:
    """Write a launch's lines (level, text) into its notify log as it would, for the desk agent that
    built its event (bridge.handoff); a log that cannot be written is skipped."""
    try:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    handler = redact_logs(BoundedFileHandler(str(settings.log_dir / "notify.log"), settings.log_max_bytes))
    handler.setFormatter(logging.Formatter(FORMAT))
    masked = settings.log_numbers != "full"  # the launch's own setting, not this process's
    try:
        for level, text in lines:
            fields = {"name": logger.name, "levelno": level, "levelname": logging.getLevelName(level)}
            shown = mask_numbers(text) if masked else text
            record = {**fields, "msg": shown, "process": pid, "keep_numbers": True}  # decided here
            handler.handle(logging.makeLogRecord(record))
    finally:
        handler.close()


def configure_logging(settings: Settings | None) -> None:
    """One size-bounded log file under the data dir, and errors to stderr (if there is one)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # its failures reach us as our errors
    formatter = logging.Formatter(FORMAT)
    logging.raiseExceptions = False  # a handler that fails stays silent: the exit status tells the truth
    log_numbers("masked" if settings is None else settings.log_numbers)
    if settings is not None:
        try:
            settings.log_dir.mkdir(parents=True, exist_ok=True)
            handler: logging.Handler = BoundedFileHandler(
                str(settings.log_dir / "notify.log"), settings.log_max_bytes
            )
            handler.setFormatter(formatter)
            root.addHandler(redact_logs(handler))
        except OSError:  # no log file: stderr still gets the errors; `tcx-bridge doctor` names the cause
            pass
    if sys.stderr is not None:  # pythonw (the gui-script) has no stderr
        console = ConsoleHandler(sys.stderr)
        console.setFormatter(ConsoleFormatter("%(message)s"))
        root.addHandler(redact_logs(console))


def log_lost(message: OutgoingMessage, error: object) -> None:
    """The one line of an event neither confirmed nor stored: LOST, its JSON, and why."""
    logger.error(
        "LOST %s (%s: %s)",
        message.body.decode("utf-8", "replace"),
        message.routing_key,
        printable(str(error)),
        extra={"keep_numbers": True},  # the event's only copy: whole, to be replayed by hand
    )
