"""The registered executable: one 3CX Assistant launch -> one confirmed event.

Path of a launch: parse argv, build and encode the event (before connecting),
publish it with confirms; on failure retry within ``publish_budget`` seconds,
then store it in the outbox and still exit 0: the event is safe. After a
successful publish, replay a bounded batch of older outboxed events.

Exit status: 0 published or stored (also when a bad setting, a refused login or
an unknown vhost made it wait in the outbox: one line on stderr names the
problem), 2 the launch was not understood (it is still published to
``call.invalid.<desk>``, or stored), 1 the event could be neither published nor
stored (stderr: one ``LOST <event JSON>`` line). The outcome line of the log
also goes to stderr: always from a terminal, and for an event outboxed because
the broker was away (the gui-script has no stderr).

This module is imported once per call: it imports only what the publish path
needs (no click; tenacity only when a retry happens).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, TextIO

import msgspec

from bridge import events
from bridge.config import Settings, load_settings
from bridge.errors import BrokerRefusedError, ConfigError, LaunchError, TcxBridgeError, TransportError
from bridge.launch import SYNTAX, parse_launch, scan_options, syntax_arguments
from bridge.outbox import Outbox
from bridge.redact import redact_logs
from bridge.text import escape_undecodable, printable
from bridge.topology import publish_event, publish_events
from bridge.transport import Broker, OutgoingMessage

logger = logging.getLogger("bridge.notify")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
WATCHDOG_GRACE = 2.0  # seconds past publish_budget for closing, replaying and logging
MAX_REASON = 1000  # characters of an invalid launch's reason (the argv itself is kept whole)


def build_event(argv: Sequence[str], settings: Settings) -> tuple[events.CallEvent, list[str]]:
    """The event for one launch, and the problems to log (invalid launches included).

    Bytes that are not UTF-8 are kept escaped (``\\xff``); when the event would be
    over the body size a consumer takes, the stray arguments (all but the last
    /N: /C: /T: /I:) are dropped from its argv. It may still be over (a huge /I:
    of an invalid launch): see :func:`too_big`.
    """
    given = tuple(escape_undecodable(item) for item in argv)
    problems = [
        f"argument {number} {printable(repr(item), 200)} holds bytes that are not UTF-8; kept escaped"
        for number, (raw, item) in enumerate(zip(argv, given, strict=True), 1)
        if raw != item
    ]
    common = {
        "event_id": events.new_event_id(),
        "desk": settings.desk,
        "extension": settings.extension,
        "occurred_at": events.utc_now(),
        "argv": given,
    }
    try:
        launch = parse_launch(given)
    except LaunchError as error:
        options = scan_options(given)  # keep what can be read of a bad launch
        event = events.CallEvent(
            kind="invalid",
            direction="unknown",
            call_id=options.get("I", "").strip() or None,
            caller_id=options.get("C"),
            reason=str(error)[:MAX_REASON],
            **common,  # type: ignore[arg-type]  # keys checked by msgspec
        )
        problems.insert(0, str(error))
    else:
        event = events.CallEvent(
            kind=launch.kind,
            direction=launch.direction,
            call_id=launch.call_id,
            caller_id=launch.caller_id,
            anonymous=launch.anonymous,
            **common,  # type: ignore[arg-type]  # keys checked by msgspec
        )
        problems += launch.warnings
    if len(events.ENCODER.encode(event)) > events.MAX_BODY:
        kept = syntax_arguments(given)
        if len(kept) < len(given):
            problems.append(
                f"dropped {len(given) - len(kept)} stray argument(s) of "
                f"{sum(map(len, given)) - sum(map(len, kept))} characters (beyond {SYNTAX}) "
                f"to keep the event within the {events.MAX_BODY} bytes a consumer takes"
            )
            event = msgspec.structs.replace(event, argv=kept)
    return event, problems


def too_big(message: OutgoingMessage) -> str | None:
    """Why a consumer would refuse this message for its size (it is lost, not kept), or None."""
    if len(message.body) <= events.MAX_BODY:
        return None
    return (
        f"the event has {len(message.body)} bytes, over the {events.MAX_BODY} a consumer takes, "
        "even without stray arguments"
    )


def to_message(event: events.CallEvent) -> OutgoingMessage:
    """The AMQP message of a call event."""
    return OutgoingMessage(
        routing_key=event.routing_key,
        body=events.ENCODER.encode(event),
        message_id=event.event_id,
        type=f"call.{event.kind}",
        timestamp=int(time.time()),
        app_id="tcx-bridge-notify",
    )


class Delivered(NamedTuple):
    """What deliver did: published or outboxed, how many old events it replayed, and why it outboxed."""

    outcome: str
    replayed: int
    why: str = ""


def _keep_now(store: Callable[[], object]) -> None:
    store()


def deliver(
    message: OutgoingMessage,
    settings: Settings,
    on_safe: Callable[[], None] = lambda: None,
    keep: Callable[[Callable[[], object]], None] = _keep_now,
) -> Delivered:
    """Publish message (retrying within the budget) or outbox it.

    on_safe is called as soon as the event is confirmed; keep(store) stores it in
    the outbox (the watchdog's keep does so once, whoever of the two comes first).
    Raises OutboxError only when the event can be neither published nor stored.
    """
    deadline = time.monotonic() + settings.publish_budget
    outbox = Outbox(settings.outbox_dir)
    position = desk_position(settings)
    try:
        return Delivered(
            "published",
            _publish_and_replay(message, settings, outbox, settings.publish_budget, on_safe, position),
        )
    except BrokerRefusedError as error:  # retrying cannot fix it: keep the event and say what to fix
        logger.error("%s; the event is kept in the outbox until that is fixed", error)
        keep(lambda: outbox.put(message))
        return Delivered("outboxed", 0, str(error))
    except TransportError as error:
        logger.warning("publish failed, retrying: %s", error)
        why = str(error)
    remaining = deadline - time.monotonic()
    if remaining > 0.05:
        import tenacity  # only on the slow path

        try:
            for attempt in tenacity.Retrying(
                stop=tenacity.stop_before_delay(remaining),
                wait=tenacity.wait_exponential(multiplier=0.1, max=1.0),
                retry=tenacity.retry_if_exception_type(TransportError),
                reraise=True,
            ):
                with attempt:
                    left = max(deadline - time.monotonic(), 0.1)
                    start = position + attempt.retry_state.attempt_number  # the next node first
                    replayed = _publish_and_replay(message, settings, outbox, left, on_safe, start)
                    return Delivered("published", replayed)
        except TransportError as error:
            logger.warning("publish failed within %.1fs: %s", settings.publish_budget, error)
            why = str(error)
    keep(lambda: outbox.put(message))
    return Delivered("outboxed", 0, why)


def desk_position(settings: Settings) -> int:
    """Where this desk starts in the list of broker addresses, so that desks spread over the nodes."""
    return sum(settings.desk.encode())  # stable across processes (str hashes are not); no zlib import


def _publish_and_replay(
    message: OutgoingMessage,
    settings: Settings,
    outbox: Outbox,
    timeout: float,
    on_safe: Callable[[], None],
    start: int = 0,
) -> int:
    connect_timeout = max(
        settings.publish_budget / (settings.broker_count + 1), 0.2
    )  # a dead node costs a fraction
    with Broker(
        settings.amqp_url,
        ca_file=settings.ca_file,
        timeout=timeout,
        start=start,
        connect_timeout=connect_timeout,
        sign=True,  # user_id: the broker vouches that this desk's user sent it
    ) as broker:
        publish_event(broker, settings, message)
        on_safe()
        if settings.replay_batch == 0:
            return 0
        try:
            replay = outbox.replay(
                publish_batch=functools.partial(publish_events, broker, settings), limit=settings.replay_batch
            )
        except TcxBridgeError as error:  # our event is out; the backlog waits for the next try
            logger.warning("outbox replay stopped: %s", error)
            return 0
        if replay.refused:  # each was logged as an error, with its reason
            logger.warning("%d outboxed event(s) refused for good, set aside", replay.refused)
        return replay.published


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


class Watchdog:
    """A hard bound on one launch: pika has no overall deadline for a confirm.

    If the launch is still running publish_budget + WATCHDOG_GRACE seconds after it
    began (a broker that accepted the connection and then went silent), the event
    goes to the outbox, unless it was already confirmed or stored, and the process
    exits. The Assistant never waits on a hung process.
    """

    def __init__(self, seconds: float, message: OutgoingMessage, settings: Settings, exit_code: int) -> None:
        self._message, self._settings, self._exit_code = message, settings, exit_code
        self._lock = threading.Lock()
        self._safe = self._finished = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._seconds = seconds

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._finished = True
        self._timer.cancel()

    @property
    def safe(self) -> bool:
        with self._lock:
            return self._safe

    def mark_safe(self) -> None:
        """The event is confirmed or stored: past the deadline, only exit."""
        with self._lock:
            self._safe = True

    def keep(self, store: Callable[[], object]) -> None:
        """Store the event once: not again if the deadline stored it already (nor the deadline after us)."""
        with self._lock:
            if not self._safe:
                store()
                self._safe = True

    def _fire(self) -> None:
        with self._lock:
            if self._finished:
                return
            if self._safe:
                logger.warning("stopped at the %.1fs deadline; the rest of the outbox waits", self._seconds)
            else:
                try:
                    Outbox(self._settings.outbox_dir).put(self._message)
                except TcxBridgeError as error:
                    log_lost(self._message, error)
                    self._exit_code = EXIT_FAILED
                else:
                    logger.warning(
                        "outboxed %s event_id=%s: the broker did not confirm within %.1fs",
                        self._message.routing_key,
                        self._message.message_id,
                        self._seconds,
                        extra={"outcome": True},
                    )
            logging.shutdown()
            os._exit(self._exit_code)


def configure_logging(settings: Settings | None) -> None:
    """One size-bounded log file under the data dir, and errors to stderr (if there is one)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # its failures reach us as our errors
    formatter = logging.Formatter("%(asctime)s %(process)d %(levelname)s %(message)s")
    logging.raiseExceptions = False  # a handler that fails stays silent: the exit status tells the truth
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
    )


USAGE = """usage: tcx-bridge-notify /N:S|C|E [/C:CallerId] [/T:I|O] /I:CallId

The executable 3CX Assistant launches once per call event (register
tcx-bridge-notifyw.exe as its "Call CRM Executable"). It publishes the event to
RabbitMQ, or keeps it in the local outbox until the broker is back.
  /N:S /C:0791234567 /T:I /I:42   an inbound call rings     /N:C ... answered
  /N:E /T:I /I:42                 it ended                  /T:O outbound
Configuration: tcx-bridge config; a desk's health: tcx-bridge doctor.
"""
HELP = frozenset({"--help", "-h", "/?", "-?", "/h", "/help"})


def run(argv: Sequence[str]) -> int:
    """Handle one launch; return the exit status."""
    if len(argv) == 1 and argv[0].lower() in HELP:  # a person, never 3CX: nothing to publish
        if sys.stdout is not None:
            sys.stdout.write(USAGE)
        return EXIT_OK
    started = time.perf_counter()
    try:
        settings = load_settings().settings
    except ConfigError as error:
        return _rescue_with_defaults(argv, error)
    configure_logging(settings)
    event, problems = build_event(argv, settings)
    message = to_message(event)
    for problem in problems:
        log = logger.error if event.kind == "invalid" else logger.warning
        log("launch %s: %s", printable(repr(list(argv)), 300), printable(problem, 1000))
    exit_code = EXIT_INVALID if event.kind == "invalid" else EXIT_OK
    oversize = too_big(message)
    if oversize:
        log_lost(message, oversize)
        return EXIT_FAILED
    deadline = settings.publish_budget + WATCHDOG_GRACE
    try:
        with Watchdog(deadline, message, settings, exit_code) as watchdog:
            try:
                delivered = deliver(message, settings, watchdog.mark_safe, watchdog.keep)
            except Exception:  # a bug: keep the call before the traceback, unless it is safe already
                if not watchdog.safe:
                    watchdog.keep(lambda: Outbox(settings.outbox_dir).put(message))
                    logger.exception(
                        "kept event_id=%s in the outbox after an unexpected error", event.event_id
                    )
                raise
    except TcxBridgeError as error:
        log_lost(message, error)
        return EXIT_FAILED
    line = "%s %s event_id=%s call_id=%s ms=%.1f replayed=%d"
    waits = " (%s); it waits in %s for the next replay"
    facts = (
        delivered.outcome,
        message.routing_key,
        event.event_id,
        printable(str(event.call_id), 200),
        (time.perf_counter() - started) * 1000,
        delivered.replayed,
    )
    if delivered.outcome == "outboxed":
        why = printable(delivered.why, 500)
        logger.warning(
            line + waits,  # noqa: G003  # two constant parts of one %-style format
            *facts,
            why,
            settings.outbox_dir,
            extra={"outcome": True},
        )
    else:
        logger.info(line, *facts, extra={"outcome": True})
    return exit_code


def _rescue_with_defaults(argv: Sequence[str], error: ConfigError) -> int:
    """Bad configuration: keep the event in the outbox (bad values taken as defaults) so it is not lost.

    The event is safe, so the exit is 0 (2 for a launch not understood); stderr names the setting to fix.
    """
    try:
        settings: Settings | None = load_settings(lenient=True).settings  # the bad values as defaults
    except TcxBridgeError:
        settings = None
    configure_logging(settings)
    logger.error("configuration error: %s; the event is kept in the outbox until that is fixed", error)
    if settings is not None:
        event, _ = build_event(argv, settings)
        message = to_message(event)
        oversize = too_big(message)
        if oversize:
            log_lost(message, oversize)
            return EXIT_FAILED
        try:
            path = Outbox(settings.outbox_dir).put(message)
        except TcxBridgeError as outbox_error:
            log_lost(message, outbox_error)
        else:
            logger.info("event_id=%s kept in %s until the configuration is fixed", event.event_id, path)
            return EXIT_INVALID if event.kind == "invalid" else EXIT_OK
    return EXIT_FAILED


def main() -> None:
    """Entry point of ``tcx-bridge-notify`` and ``tcx-bridge-notifyw``."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
