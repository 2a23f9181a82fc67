"""Screen pops on the desk: open the contact's http(s) URL, or run ``popup_command``.

A value (a caller's name, a number, a URL) never chooses what runs nor becomes
an option of it: the template is split like a shell would, then each word is
filled (:func:`popup_argv`), and :func:`popup_refusal` says when values must not
reach the command at all.
"""

from __future__ import annotations

import logging
import re
import shlex
import string
import subprocess
import sys
from datetime import UTC, datetime

from bridge import events
from bridge.config import Settings
from bridge.errors import HandlerError
from bridge.text import printable
from consumers.agent.settings import AGENT

logger = logging.getLogger(__name__)


def show(pop: events.ScreenPop, settings: Settings) -> str:
    """Show one screen pop; the outcome for the log line (expired, shown, popped)."""
    options = AGENT.of(settings)
    age = (datetime.now(UTC) - events.parse_time(pop.occurred_at)).total_seconds()
    if age > settings.popup_ttl:
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
    if options.popup_command:
        argv = popup_argv(options.popup_command, values)
        refused = popup_refusal(options.popup_command, values)
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
