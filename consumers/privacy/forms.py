"""Every form a number is stored in, found in stores and in text, and its keyed hash.

A caller id is kept as it was dialled (``0791233535``, ``+41 (0)79 123 35 35``,
``0041 79 123 35 35``, inside the launch's ``argv`` as ``/C:0791233535``) or as
E.164. :func:`forms_of` gives the digit strings of all of them; a stored value is
the number when its digits are one of them (``digits`` in SQL), and a text holds
it where a run of digits and separators contains one (:func:`find_in_text`).
With ``analytics_numbers = "hashed"`` analytics keeps ``#`` + a keyed hash
(:func:`number_hash`), which is a form too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import NamedTuple

import phonenumbers

from bridge.errors import ConfigError

ERASED = "[erased]"  # what replaces a number in a row kept for the totals, or in a file
KEY_FILE = "privacy.key"  # in the data dir: the key of the numbers' hashes (analytics, the audit)
HASH_PREFIX = "#"
MIN_DIGITS = 3
# a run of digits with the separators people write between them (also inside argv: /C:079…)
RUN_IN_TEXT = re.compile(r"\+?\d(?:[ \-/.]?(?:\(0\) ?)?\d)*")
SEPARATORS = re.compile(r"[\s().\-/]")


class Forms(NamedTuple):
    """A number as asked for: as given, its E.164 form (if it has one), every digit form and its hash."""

    given: str
    e164: str | None
    digits: frozenset[str]
    hashes: frozenset[str]

    @property
    def values(self) -> tuple[str, ...]:
        """What a stored value may equal exactly (hashes) besides a digit form."""
        return tuple(sorted(self.hashes))


def digits(text: str | None) -> str:
    """The digits of text (what the SQL function ``tcx_digits`` computes)."""
    return "".join(char for char in text or "" if char.isdigit())


def forms_of(number: str, region: str, key: bytes | None = None) -> Forms:
    """Every digit form of number; a ConfigError (naming it) if it has too few digits to be one."""
    given = number.strip()
    raw_digits = digits(given)
    if len(raw_digits) < MIN_DIGITS:
        raise ConfigError(
            f"number {number!r} has fewer than {MIN_DIGITS} digits; give it as dialled or E.164"
        )
    found = {raw_digits}
    e164 = None
    try:
        parsed = phonenumbers.parse(given, region)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is not None and phonenumbers.is_possible_number(parsed):
        e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        cc = str(parsed.country_code)
        nsn = phonenumbers.national_significant_number(parsed)
        national = digits(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL))
        found |= {cc + nsn, "00" + cc + nsn, national}
        if national.startswith("0") and not nsn.startswith("0"):
            found |= {cc + "0" + nsn, "00" + cc + "0" + nsn}  # +41 (0)79 …
    hashes = frozenset({number_hash(key, e164 or raw_digits)}) if key is not None else frozenset()
    return Forms(given, e164, frozenset(form for form in found if len(form) >= MIN_DIGITS), hashes)


def key_of(data_dir: str | Path) -> bytes:
    """The data dir's hashing key, created (random, readable by its owner only) the first time."""
    path = Path(data_dir) / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except ValueError:
        raise ConfigError(f"key file {str(path)!r} is not hex; delete it to start a new key") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key.hex() + "\n")
    return key


def number_hash(key: bytes, canonical: str) -> str:
    """``#`` and 16 hex digits of HMAC-SHA256(key, canonical): the same caller, the same hash."""
    return HASH_PREFIX + hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()[:16]


def canonical(raw: str | None, region: str) -> str | None:
    """What a caller id is hashed as: its E.164 form, else its digits; None for no number."""
    text = (raw or "").strip()
    if len(digits(text)) < MIN_DIGITS:
        return None
    try:
        parsed = phonenumbers.parse(text, region)
        if phonenumbers.is_possible_number(parsed):
            return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    except phonenumbers.NumberParseException:
        pass
    return digits(text)


def holds(text: str | None, forms: Forms) -> bool:
    """Whether a stored value is the number (its digits one of the forms, or its hash)."""
    if not text:
        return False
    return text in forms.hashes or digits(text) in forms.digits


def _holds_form(run: str, forms: Forms) -> bool:
    """Whether some consecutive groups of a run (``+41 (0)79 111 22 33 1001``) make one of the forms.

    Whole groups only: ``+49 79 111 22 33`` does not hold ``079 111 22 33``, and a
    number followed by a call id in the same run is still found.
    """
    groups = [group for group in re.split(r"[\s\-/.+]+", run.replace("(", "").replace(")", "")) if group]
    longest = max(map(len, forms.digits), default=0)
    for start in range(len(groups)):
        joined = ""
        for group in groups[start:]:
            joined += group
            if len(joined) > longest:
                break
            if joined in forms.digits:
                return True
    return False


def find_in_text(text: str, forms: Forms) -> list[tuple[int, int]]:
    """Where text holds the number: (start, end) of each run of digits whose groups make one of its forms."""
    spans = []
    for match in RUN_IN_TEXT.finditer(text):
        if _holds_form(match.group(), forms):
            spans.append(match.span())
    for value in forms.hashes:
        spans += [(m.start(), m.end()) for m in re.finditer(re.escape(value), text)]
    return sorted(spans)


def erase_in_text(text: str, forms: Forms) -> tuple[str, int]:
    """text with every occurrence of the number replaced by ERASED, and how many there were."""
    spans = find_in_text(text, forms)
    for start, end in reversed(spans):
        text = text[:start] + ERASED + text[end:]
    return text, len(spans)
