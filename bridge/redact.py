"""Secrets out of everything shown: every URL printed, logged or put in an error goes through here.

A URL can carry a secret in its userinfo (``amqp://u:secret@h``), in its query
(``postgresql://h/db?password=secret``, ``sslpassword=``, ``?token=``,
``?api_key=``) or in its fragment (``#access_token=``). :func:`redact_url` masks
each of them with ``****`` and keeps the rest of the URL as it was written (the
host, the user, the other parameters), so an operator can still see which
address is meant. :func:`redact_text` does the same for every URL inside a
longer text (an error message, a log line, a command template), and masks the
secrets of the URLs it is given wherever a library quoted them without the URL.
:class:`RedactingFilter` runs every log record through :func:`redact_text`, and masks the
phone numbers in it (:func:`mask_numbers`) unless ``log_numbers = "full"``.

Numbers are masked with a cheap digit rule (no phonenumbers: notify imports this on
every launch): a run of 7 or more digits, written with spaces, ``-``, ``/`` or a
``(0)`` between them and an optional ``+`` or ``00`` in front, keeps its country
code (international form) or trunk ``0`` (national form) and its last 4 digits;
every other digit becomes ``•`` and the separators stay as written
(``+41 79 123 35 35`` -> ``+41 •• ••• 35 35``, ``0791233535`` -> ``0•••••3535``).
Shorter runs (internal extensions, short codes such as 112) stay as they are: they
name a desk or a service, not a caller. A record logged with ``extra={"keep_numbers":
True}`` keeps them (notify's LOST line: the event's only copy, to be replayed by hand).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

MASK = "****"
# query and fragment parameters whose value is a secret (psycopg's password and
# sslpassword, access_token, api_key, X-Amz-Signature, a CRM's ?token= or ?key=)
SECRET_PARAMETER = re.compile(
    r"pass|pwd|secret|token|credential|api[-_]?key|access[-_]?key|private[-_]?key|signature|^sig$|^key$|^auth$",
    re.IGNORECASE,
)
URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
PLACEHOLDER = "://user:password@"  # how our messages show where the password goes
MIN_SECRET = 3  # shorter secrets are masked inside URLs only: alone they would mask parts of words


def _authority_end(rest: str) -> int:
    """Where the authority (userinfo@host:port) of a URL's part after ``://`` ends."""
    ends = [index for index in (rest.find(mark) for mark in "/?#") if index != -1]
    return min(ends, default=len(rest))


def split_userinfo(url: str) -> tuple[str, str, str] | None:
    """(``scheme://user``, password, ``@host...``) of a URL with a password, else None.

    A password holding an unencoded ``/``, ``?`` or ``#`` (``amqp://u:pa/ss@h``) still
    counts as one: the userinfo then runs to the last ``@`` before the query, which is
    what its writer meant even if a URL parser reads ``pa`` as a port.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = _authority_end(rest)
    at = rest.rfind("@", 0, end)
    if at == -1:
        query = min((i for i in (rest.find("?"), rest.find("#")) if i != -1), default=len(rest))
        at = rest.rfind("@", 0, query)
        user_end = rest.find(":", 0, end)
        if at == -1 or user_end == -1 or rest[user_end + 1 : end].isdigit():
            return None  # no userinfo, or a real host:port before a path that holds an @
    userinfo = rest[:at]
    user, colon, password = userinfo.partition(":")
    if not colon:
        return None
    return f"{scheme}://{user}", password, rest[at:]


def _mask_parameters(part: str) -> str:
    """``a=1&token=x`` with every secret value masked (``;`` separates too)."""
    pieces = re.split(r"([&;])", part)
    for index, piece in enumerate(pieces):
        name, equals, value = piece.partition("=")
        if equals and value and SECRET_PARAMETER.search(unquote(name)):
            pieces[index] = f"{name}={MASK}"
    return "".join(pieces)


def redact_url(url: str) -> str:
    """The URL (or comma-separated URLs) with every password and secret parameter as ``****``."""
    if "," in url:
        return ",".join(redact_url(part.strip()) for part in url.split(","))
    split = split_userinfo(url)
    if split is not None:
        head, password, tail = split
        url = f"{head}:{MASK}{tail}" if password else url
    base, hash_mark, fragment = url.partition("#")
    base, question, query = base.partition("?")
    if question:
        base += question + _mask_parameters(query)
    if hash_mark:
        base += hash_mark + _mask_parameters(fragment)
    return base


def secrets_of(url: str) -> set[str]:
    """The secrets a URL (or comma-separated URLs) holds: passwords and secret parameter values."""
    found: set[str] = set()
    for one in url.split(","):
        split = split_userinfo(one.strip())
        if split is not None and split[1]:
            found.add(split[1])
        _, _, after = one.partition("?")
        for piece in re.split(r"[&;#]", after):
            name, equals, value = piece.partition("=")
            if equals and value and SECRET_PARAMETER.search(unquote(name)):
                found.add(value)
    return found | {unquote(secret) for secret in found}


def _redact_match(match: re.Match[str]) -> str:
    """One URL found in a text; punctuation after it (``url: ...``, ``(url)``) is the text's."""
    found = match.group()
    url = found.rstrip(".,;:!?)]}")
    if PLACEHOLDER in url:
        return found  # our own hint (use amqp://user:password@host...), nothing secret
    return redact_url(url) + found[len(url) :]


def redact_text(text: str, *urls: str) -> str:
    """text with every URL in it redacted, and the secrets of urls masked wherever they appear alone."""
    if "://" in text:
        text = URL_IN_TEXT.sub(_redact_match, text)
    secrets = {secret for url in urls for secret in secrets_of(url) if len(secret) >= MIN_SECRET}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


# a phone number in a text: 7+ digits, separators between them, not part of a word, an id or a time
PHONE_IN_TEXT = re.compile(r"(?<![\w+\-/.])\+?\d(?:[ \-/]?(?:\(0\) ?)?\d){6,}(?![\w\-])")
MIN_MASKED_DIGITS = 7
KEPT_DIGITS = 4
BULLET = "\u2022"
# ITU country calling codes of 1 and 2 digits (the rest have 3): prefix-free, so the first match is it
_CC1 = frozenset("17")
_CC2 = frozenset(
    "20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 62 63 64 65 66 "
    "81 82 84 86 90 91 92 93 94 95 98".split()
)
_LOG_NUMBERS = {"masked": True}  # log_numbers: set once per process by whoever sets up logging


def country_code(digits: str) -> str:
    """The country calling code at the start of an international number's digits (no + or 00)."""
    if digits[:1] in _CC1:
        return digits[:1]
    return digits[:2] if digits[:2] in _CC2 else digits[:3]


def mask_number(text: str) -> str:
    """One written number with all digits but its country code (or trunk 0) and its last 4 as ``•``."""
    digits = "".join(c for c in text if c.isdigit())
    if text.startswith("+"):
        kept_head = len(country_code(digits))
    elif digits.startswith("00"):
        kept_head = 2 + len(country_code(digits[2:]))
    else:
        kept_head = 1 if digits.startswith("0") else 0
    hidden = range(kept_head, len(digits) - KEPT_DIGITS)
    out, index = [], 0
    for char in text:
        if char.isdigit():
            out.append(BULLET if index in hidden else char)
            index += 1
        else:
            out.append(char)
    return "".join(out)


def mask_numbers(text: str) -> str:
    """text with every phone number in it masked (:func:`mask_number`); shorter digit runs kept."""
    return PHONE_IN_TEXT.sub(lambda match: mask_number(match.group()), text)


def log_numbers(mode: str) -> None:
    """``masked`` (the default) or ``full``: how every filtered log handler shows phone numbers."""
    _LOG_NUMBERS["masked"] = mode != "full"


class RedactingFilter(logging.Filter):
    """A handler filter: the message (and traceback) of every record with its URLs redacted,
    and its phone numbers masked (unless log_numbers is ``full``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "://" in message:
            message = redact_text(message)
        masked = _LOG_NUMBERS["masked"] and not getattr(record, "keep_numbers", False)
        if masked and PHONE_IN_TEXT.search(message) is not None:
            message = mask_numbers(message)
        record.msg, record.args = message, None  # formatted once: the handler's format() reuses it
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and "://" in record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.exc_text and masked:
            record.exc_text = mask_numbers(record.exc_text)
        return True


def redact_logs(handler: logging.Handler) -> logging.Handler:
    """handler, with its records redacted (every handler a command sets up gets this, once)."""
    if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
        handler.addFilter(RedactingFilter())
    return handler
