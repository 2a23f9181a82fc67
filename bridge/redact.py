"""Secrets out of everything shown: every URL printed, logged or put in an error goes through here.

A URL can carry a secret in its userinfo (``amqp://u:secret@h``), in its query
(``postgresql://h/db?password=secret``, ``sslpassword=``, ``?token=``,
``?api_key=``) or in its fragment (``#access_token=``). :func:`redact_url` masks
each of them with ``****`` and keeps the rest of the URL as it was written (the
host, the user, the other parameters), so an operator can still see which
address is meant. :func:`redact_text` does the same for every URL inside a
longer text (an error message, a log line, a command template), and masks the
secrets of the URLs it is given wherever a library quoted them without the URL.
:class:`RedactingFilter` runs every log record through :func:`redact_text`.
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


class RedactingFilter(logging.Filter):
    """A handler filter: the message (and traceback) of every record with its URLs redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "://" in message:
            record.msg, record.args = redact_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and "://" in record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def redact_logs(handler: logging.Handler) -> logging.Handler:
    """handler, with its records redacted (every handler a command sets up gets this, once)."""
    if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
        handler.addFilter(RedactingFilter())
    return handler
