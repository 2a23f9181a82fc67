"""The desk agent: dials on the local 3CX Assistant, shows screen pops, replays the outbox.

One per desk, long-running: ``tcx-bridge agent``. Its queue ``tcx.desk.<desk>``
is bound on ``tcx.commands`` to ``desk.<desk>.*`` and, with an extension
configured, to ``ext.<extension>.dial`` and ``ext.<extension>.popup``.

At most once: a request_id is recorded durably (status ``dialing``) before the
Assistant runs, so a redelivery (after a crash, a lost ack, or a duplicate
publish) never dials again. A request found still ``dialing`` means the agent
died while dialing; it is reported ``failed`` and not retried, since the call
may have been placed.
"""

from __future__ import annotations

import functools
import logging
import re
import shlex
import string
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from bridge import events
from bridge.config import Settings
from bridge.dial import clean_number
from bridge.errors import DialError, DialExpiredError, HandlerError, TcxBridgeError
from bridge.outbox import Outbox
from bridge.text import printable
from bridge.topology import (
    Binding,
    declare_commands,
    declare_events,
    desk_bindings,
    desk_queue_name,
    publish_events,
)
from bridge.transport import Broker, Delivery, OutgoingMessage
from consumers.agent.dial_policy import DialPolicy
from consumers.analytics.calls import spoofed
from consumers.runtime.consumer import Consumer, Context
from consumers.store.core import open_database

logger = logging.getLogger(__name__)

DIALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS dials (
    request_id TEXT PRIMARY KEY,
    number TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    requested_by TEXT,
    received_at TEXT NOT NULL,
    finished_at TEXT
);
"""
# added later; an older agent.sqlite3 gets them at start
DIALS_COLUMNS = {"confirm_by": "REAL", "call_id": "TEXT", "dialed_at": "TEXT"}
CONFIRM_SLACK = 2.0  # seconds an Assistant event may seem to precede the dial (clocks, rounding)


def assistant_running(name: str) -> bool:
    """True when a process of that name (case-insensitive, with or without .exe) runs on this desk."""
    import psutil  # only on desks that check

    wanted = {name.lower(), name.lower().removesuffix(".exe")}
    for process in psutil.process_iter(["name"]):
        found = (process.info.get("name") or "").lower()
        if found in wanted or found.removesuffix(".exe") in wanted:
            return True
    return False


def run_assistant(settings: Settings, number: str) -> tuple[events.DialStatus, str | None]:
    """Run ``<assistant> -cmd makecall:<number>`` (an argument list, never a shell)."""
    if settings.assistant_process and not assistant_running(settings.assistant_process):
        return "failed", "3CX Assistant is not running on this desk"
    command = [settings.assistant, "-cmd", f"makecall:{number}"]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=settings.assistant_timeout,
            check=False,
            shell=False,
        )
    except FileNotFoundError:
        return "failed", (
            f"the 3CX Assistant client {settings.assistant!r} was not found; install it or "
            "set TCX_BRIDGE_ASSISTANT to its path"
        )
    except PermissionError:
        return "failed", f"the 3CX Assistant client {settings.assistant!r} cannot be run (permission denied)"
    except subprocess.TimeoutExpired:
        return "failed", f"the 3CX Assistant did not finish within {settings.assistant_timeout:g}s"
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        tail = f": {detail[-1][:200]}" if detail else ""
        return "failed", (
            f"the 3CX Assistant exited with status {done.returncode}{tail} (is it running and logged in?)"
        )
    return "dialed", None


class Unreadable(NamedTuple):
    """A dial request that cannot be taken, but whose request_id (and number) can be read."""

    request_id: str
    number: str
    reason: str

    @classmethod
    def of(cls, body: bytes, reason: str) -> Unreadable | None:
        """Read only request_id and number: whatever else is wrong, they may be fine."""
        found = _read_ids(body)
        if found is None:
            return None
        request_id, number = found
        if not isinstance(request_id, str) or not 0 < len(request_id) <= events.MAX_REQUEST_ID:
            return None
        try:
            request_id.encode()
        except UnicodeEncodeError:  # a lone surrogate: no result could carry it
            return None
        return cls(request_id, printable(number, events.MAX_NUMBER), printable(reason, 1000))


class _Ids(msgspec.Struct):
    """The two fields a rejection needs, kept as raw JSON (a number may be 1e400 or 5,000 digits long)."""

    request_id: msgspec.Raw = msgspec.Raw(b"null")
    number: msgspec.Raw = msgspec.Raw(b"null")


_IDS_DECODER = msgspec.json.Decoder(_Ids)


def _read_ids(body: bytes) -> tuple[object, str] | None:
    """A request's request_id (any JSON value) and its number as text; None when no JSON object is there."""
    try:
        found = _IDS_DECODER.decode(body)
        request_id = msgspec.json.decode(found.request_id)
        raw = bytes(found.number)
        number = msgspec.json.decode(raw) if raw.startswith(b'"') else raw.decode("utf-8", "replace")
        return request_id, "" if raw == b"null" else str(number)
    except (msgspec.ValidationError, RecursionError):
        return None
    except msgspec.DecodeError:  # e.g. a lone surrogate escape in some field, which Python's json takes
        import json

        try:
            document = json.loads(body.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            return None
        if not isinstance(document, dict):
            return None
        value = document.get("number")
        return document.get("request_id"), "" if value is None else str(value)


class DeskAgent(Consumer):
    """Takes dial requests and screen pops addressed to this desk."""

    signs = True  # dial results and replayed events carry user_id: the broker vouches for this desk

    def __init__(self, settings: Settings) -> None:
        self.name = self.name_for(settings)
        self.settings = settings
        # not `database`: each dial commits on its own, before the Assistant runs (no batching)
        self.dials = open_database(Path(settings.data_dir) / "agent.sqlite3", DIALS_SCHEMA)
        known = {row["name"] for row in self.dials.execute("PRAGMA table_info(dials)")}
        for column, kind in DIALS_COLUMNS.items():
            if column not in known:
                self.dials.execute(f"ALTER TABLE dials ADD COLUMN {column} {kind}")
        self._next_replay = 0.0
        self.policy = DialPolicy.of(settings)

    @classmethod
    def name_for(cls, settings: Settings) -> str:
        return desk_queue_name(settings.desk)

    @classmethod
    def bindings(cls, settings: Settings) -> Sequence[Binding]:
        return desk_bindings(settings)

    @classmethod
    def declare(cls, broker: Broker, settings: Settings) -> None:
        declare_events(broker, settings)  # results go there
        declare_commands(broker, settings)

    def decode(self, body: bytes, routing_key: str) -> Any:
        if routing_key.endswith(".dial"):
            try:
                return events.DIAL_REQUEST_DECODER.decode(body)
            except Exception as error:  # whatever is wrong (even a bug), a readable request_id gets an answer
                unreadable = Unreadable.of(body, str(error) or type(error).__name__)
                if unreadable is None:
                    raise  # no request_id to answer to: dead-lettered
                return unreadable
        if routing_key.endswith(".popup"):
            return events.SCREEN_POP_DECODER.decode(body)
        if routing_key.startswith("call."):
            return events.CALL_EVENT_DECODER.decode(body)
        raise HandlerError(f"routing key {routing_key!r} is neither a dial nor a popup")

    def handle(self, message: Any, context: Context) -> str:
        if isinstance(message, events.DialRequest):
            return self.dial(message, context)
        if isinstance(message, Unreadable):
            return self.reject_unreadable(message, context)
        if isinstance(message, events.CallEvent):
            return self.confirm(message, context)
        return self.popup(message)

    def refuse(self, delivery: Delivery, context: Context, reason: str) -> None:
        """A dial request the broker vouches for no one for: its CRM gets ``rejected`` with the reason."""
        unreadable = Unreadable.of(delivery.body, reason) if delivery.routing_key.endswith(".dial") else None
        if unreadable is None:
            return
        request = events.DialRequest(request_id=unreadable.request_id, number=unreadable.number)
        if not self.dials.execute(
            "SELECT 1 FROM dials WHERE request_id = ?", (request.request_id,)
        ).fetchone():
            self._record(request, request.number, "rejected", reason)
            self._report(context.publish, request, request.number, "rejected", reason)

    def reject_unreadable(self, unreadable: Unreadable, context: Context) -> str:
        """A request that does not decode but names its request_id: the CRM gets ``rejected``."""
        request = events.DialRequest(request_id=unreadable.request_id, number=unreadable.number)
        if self.dials.execute("SELECT 1 FROM dials WHERE request_id = ?", (request.request_id,)).fetchone():
            return "duplicate"
        reason = f"the request cannot be read: {unreadable.reason}"
        self._record(request, request.number, "rejected", reason)
        self._report(context.publish, request, request.number, "rejected", reason)
        return "rejected"

    # dialing ---------------------------------------------------------------
    def dial(self, request: events.DialRequest, context: Context) -> str:
        row = self.dials.execute(
            "SELECT status, number FROM dials WHERE request_id = ?", (request.request_id,)
        ).fetchone()
        if row is not None:
            if row["status"] == "dialing":  # we died between recording and finishing
                stale = (
                    "the desk agent stopped while dialing; not dialed again: the call may have been placed"
                )
                self._finish(request.request_id, "failed", stale)
                self._report(context.publish, request, row["number"], "failed", stale)
            return "duplicate"
        try:
            number = self._check(request)
            self._allowed(number)
        except DialError as error:
            status: events.DialStatus = "expired" if isinstance(error, DialExpiredError) else "rejected"
            self._record(request, request.number, status, str(error))
            self._report(context.publish, request, request.number, status, str(error))
            return status
        self._record(request, number, "dialing", None)  # durable before anything runs
        status, reason = run_assistant(self.settings, number)
        self._finish(request.request_id, status, reason)
        confirm_within = None
        if status == "dialed" and self.settings.dial_confirm_timeout > 0:
            confirm_within = self.settings.dial_confirm_timeout
            self.dials.execute(
                "UPDATE dials SET confirm_by = ?, dialed_at = ? WHERE request_id = ?",
                (time.time() + confirm_within, events.utc_now(), request.request_id),
            )
        self._report(context.publish, request, number, status, reason, confirm_within=confirm_within)
        return status

    # confirmation from the Assistant's own events --------------------------
    def confirm(self, event: events.CallEvent, context: Context) -> str:
        """An outbound call event of this desk confirms the dial it belongs to.

        A dial whose number has the call id's digits is preferred; else a started
        event confirms the oldest dial still waiting that was placed before it.
        """
        problem = spoofed(context.settings, context.delivery, event)
        if problem is not None:
            raise HandlerError(problem)  # another desk's user cannot confirm (or hide) this desk's dials
        if event.direction != "outbound" or event.call_id is None:
            return "ignored"
        waiting = self.dials.execute(
            "SELECT * FROM dials WHERE status = 'dialed' AND confirm_by IS NOT NULL ORDER BY dialed_at"
        ).fetchall()
        digits = _digits(event.call_id)
        match = next((row for row in waiting if digits and _digits(row["number"]) == digits), None)
        if match is None and event.kind == "started":
            moment = events.parse_time(event.occurred_at)
            match = next(
                (
                    row
                    for row in waiting
                    if (moment - events.parse_time(row["dialed_at"])).total_seconds() >= -CONFIRM_SLACK
                ),
                None,
            )
        if match is None:
            return "no-dial-waiting"
        self.dials.execute(
            "UPDATE dials SET status = 'confirmed', call_id = ?, finished_at = ? WHERE request_id = ?",
            (event.call_id, events.utc_now(), match["request_id"]),
        )
        self._report(
            context.publish, _request_of(match), match["number"], "confirmed", None, call_id=event.call_id
        )
        return "confirmed"

    def _unconfirmed(self, broker: Broker) -> None:
        """Dials whose confirmation did not come in time: dial.unconfirmed."""
        for row in self.dials.execute(
            "SELECT * FROM dials WHERE status = 'dialed' AND confirm_by < ?", (time.time(),)
        ).fetchall():
            reason = (
                f"the 3CX Assistant reported no outbound call within {self.settings.dial_confirm_timeout:g}s "
                "(is it running and logged in?)"
            )
            self.dials.execute(
                "UPDATE dials SET status = 'unconfirmed', reason = ?, finished_at = ? WHERE request_id = ?",
                (reason, events.utc_now(), row["request_id"]),
            )
            self._report(
                functools.partial(_publish_on, broker), _request_of(row), row["number"], "unconfirmed", reason
            )

    @staticmethod
    def _check(request: events.DialRequest) -> str:
        """The number to dial; DialError if the request expired or the number is not acceptable."""
        if request.expires_at is not None and events.parse_time(request.expires_at) <= datetime.now(UTC):
            raise DialExpiredError(f"the request expired at {request.expires_at}")
        return clean_number(request.number)

    def _allowed(self, number: str) -> None:
        """DialError unless the desk's dial policy lets it dial number now (premium rate, prefixes, rate)."""
        self.policy.check(number)
        since = events.format_time(datetime.now(UTC) - timedelta(seconds=self.policy.window))
        (recent,) = self.dials.execute(
            "SELECT COUNT(*) FROM dials WHERE status IN ('dialing', 'dialed', 'confirmed', 'failed') "
            "AND received_at >= ?",
            (since,),
        ).fetchone()
        self.policy.check_rate(recent)

    def _record(self, request: events.DialRequest, number: str, status: str, reason: str | None) -> None:
        self.dials.execute(
            "INSERT INTO dials (request_id, number, status, reason, requested_by, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (request.request_id, number, status, reason, request.requested_by, events.utc_now()),
        )

    def _finish(self, request_id: str, status: str, reason: str | None) -> None:
        self.dials.execute(
            "UPDATE dials SET status = ?, reason = ?, finished_at = ? WHERE request_id = ?",
            (status, reason, events.utc_now(), request_id),
        )

    def _report(
        self,
        publish: Callable[[str, OutgoingMessage], bool],
        request: events.DialRequest,
        number: str,
        status: events.DialStatus,
        reason: str | None,
        *,
        call_id: str | None = None,
        confirm_within: float | None = None,
    ) -> None:
        """Publish the request's result (dial.<status>.<desk>) on the events exchange."""
        self._publish_result(
            publish,
            events.DialResult(
                request_id=request.request_id,
                desk=self.settings.desk,
                number=number,
                status=status,
                reason=reason[:4000] if reason else None,
                occurred_at=events.utc_now(),
                extension=self.settings.extension,
                requested_by=request.requested_by,
                call_id=call_id,
                confirm_within=confirm_within,
            ),
        )

    def _publish_result(
        self, publish: Callable[[str, OutgoingMessage], bool], result: events.DialResult
    ) -> None:
        self.metrics.dial_result(result.status)
        if result.reason:
            logger.warning("dial %s %s: %s", result.request_id, result.status, result.reason)
        else:
            logger.info("dial %s %s %s", result.request_id, result.status, result.call_id or "")
        publish(
            self.settings.exchange,
            OutgoingMessage(
                routing_key=result.routing_key,
                body=events.ENCODER.encode(result),
                message_id=events.new_event_id(),
                type="dial.result",
                timestamp=int(time.time()),
                app_id="tcx-bridge-agent",
            ),
        )

    # screen pops -----------------------------------------------------------
    def popup(self, pop: events.ScreenPop) -> str:
        age = (datetime.now(UTC) - events.parse_time(pop.occurred_at)).total_seconds()
        if age > self.settings.popup_ttl:
            return "expired"
        contact = pop.contact
        values = {
            "url": (contact.url if contact else None) or "",
            "name": contact.name if contact else "",
            "company": (contact.company if contact else None) or "",
            "email": (contact.email if contact else None) or "",
            "number": pop.caller_id or "",
            "e164": pop.number_e164 or "",
            "call_id": pop.call_id,
            "desk": pop.desk,
        }
        shown = f"{values['name'] or 'unknown caller'} {values['e164'] or values['number']}".strip()
        if self.settings.popup_command:
            argv = popup_argv(self.settings.popup_command, values)
            refused = popup_refusal(self.settings.popup_command, values)
            if refused:
                logger.warning("popup %s: not running popup_command: %s", printable(shown), refused)
                return "shown"
            try:
                subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            except OSError as error:
                raise HandlerError(f"popup command {argv[0]!r} cannot run: {error}") from None
            logger.info("popup %s: ran %s", shown, argv[0])
            return "popped"
        if values["url"]:
            if not is_web_url(values["url"]):
                # the browser opener would also start programs and files (os.startfile on Windows)
                logger.warning("popup %s: not opening %r, only http(s) URLs are opened", shown, values["url"])
                return "shown"
            import webbrowser

            webbrowser.open(values["url"])
            logger.info("popup %s: opened %s", shown, values["url"])
            return "popped"
        logger.info("popup %s (no url to open)", shown)
        return "shown"

    # the notify outbox -----------------------------------------------------
    def tick(self, broker: Broker, settings: Settings) -> None:
        self._unconfirmed(broker)
        now = time.monotonic()
        if now < self._next_replay:
            return
        self._next_replay = now + settings.replay_interval
        outbox = Outbox(settings.outbox_dir)
        try:
            replay = outbox.replay(publish_batch=functools.partial(publish_events, broker, settings))
        except TcxBridgeError as error:
            logger.warning("outbox replay stopped: %s", error)
        else:
            if replay.published or replay.refused:
                logger.info(
                    "replayed %d outboxed event(s); %d refused for good (set aside); %d left",
                    replay.published,
                    replay.refused,
                    replay.remaining,
                )
        waiting = outbox.paths()  # sampled after the replay: what still waits
        try:
            oldest = time.time() - waiting[0].stat().st_mtime if waiting else 0.0
        except OSError:  # replayed by a launch meanwhile
            oldest = 0.0
        self.metrics.outbox(len(waiting), oldest, len(outbox.refused()))

    def close(self) -> None:
        self.dials.close()


def _publish_on(broker: Broker, exchange: str, message: OutgoingMessage) -> bool:
    broker.publish(exchange, message)  # the events exchange has an alternate: never returned
    return True


def _digits(text: str) -> str:
    return "".join(character for character in text if character.isdigit())


def _request_of(row: Any) -> events.DialRequest:
    """The request a dials row was made from (enough of it for a result)."""
    return events.DialRequest(
        request_id=row["request_id"], number=row["number"], requested_by=row["requested_by"]
    )


def is_web_url(url: str) -> bool:
    """True for an http(s) URL with a host: the only kind a screen pop opens in the browser."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def popup_argv(template: str, values: dict[str, str]) -> list[str]:
    """Split the template like a shell would, then fill each word: values never become new words.

    The program (the first word) is the template's own: a value never chooses what runs.
    """
    try:
        words = shlex.split(template)
        if not words or "{" in words[0]:
            raise ValueError("its first word must name the program, with no {value} in it")
        return [word.format(**values) for word in words]
    except (KeyError, IndexError, ValueError) as error:
        raise HandlerError(f"popup_command {template!r} is not a usable template: {error}") from None


# Characters cmd.exe acts on when CreateProcess runs a .bat or .cmd file: Python's
# argument quoting does not protect them there (the "BatBadBut" class of bugs).
PHONE_NUMBER = re.compile(r"\+[0-9 ()./-]*")  # +41 44 123 45 67: a value, no option
CMD_SPECIAL = frozenset('"%&|<>^!\r\n')


def popup_refusal(
    template: str, values: dict[str, str], *, windows: bool = sys.platform == "win32"
) -> str | None:
    """Why popup_command must not run with these values, or None when it may.

    * ``{url}``: an http(s) URL or empty, as for the browser (a file path or
      ``javascript:`` never reaches the command);
    * a value never starts an option: a word that a value begins (``{number}``, not
      ``--number={number}``) must not begin with ``-`` (nor with ``+`` unless it is a
      phone number) unless it stands after a ``--`` word, nor, on Windows, with ``/``
      anywhere (Windows programs take ``/switch`` and do not all honour ``--``);
    * on Windows, a ``.bat``/``.cmd`` program gets no value holding a character
      cmd.exe interprets.
    """
    words = shlex.split(template)
    url = values.get("url", "")
    if url and any("url" in _fields(word) for word in words) and not is_web_url(url):
        return f"{{url}} {printable(url)!r} is not an http(s) URL"
    after_dashes = False
    for position, word in enumerate(words[1:], start=2):
        if word == "--":
            after_dashes = True
            continue
        filled = word.format(**values)
        if not filled or filled[0] == word[0]:
            continue  # empty, or the template's own first character
        name = next(iter(_fields(word)), "value")
        if (filled[0] == "/" and windows) or (not after_dashes and _option_like(filled)):
            return (
                f"{{{name}}} {printable(filled)!r} would start an option (word {position}); "
                "put the values after -- or write them as --option={value}"
            )
    if windows and words[0].lower().endswith((".bat", ".cmd")):
        for word in words[1:]:
            if _fields(word) and CMD_SPECIAL.intersection(word.format(**values)):
                return (
                    f"{printable(word.format(**values))!r} holds characters cmd.exe would act on; "
                    "run an .exe or a PowerShell script instead of a .bat or .cmd file"
                )
    return None


def _option_like(value: str) -> bool:
    """True for ``-x`` and ``--x``, and for ``+x`` that is no phone number (``less +!cmd``, ``vim +cmd``)."""
    return value[0] == "-" or (value[0] == "+" and PHONE_NUMBER.fullmatch(value) is None)


def _fields(word: str) -> list[str]:
    """The names of the {values} in one template word."""
    names = (name for _, name, _, _ in string.Formatter().parse(word) if name)
    return [re.split(r"[!.\[]", name, maxsplit=1)[0] for name in names]
