"""Parse a 3CX Assistant CRM launch into its parts; no I/O.

The Assistant runs ``<exe> /N:S|C|E [/C:CallerId] [/T:I|O] /I:CallId``. We accept
it as tolerantly as a robust Windows program would:

* option letters and the N and T values are case-insensitive;
* ``-N:`` works like ``/N:``;
* a value may hold spaces and any characters (it is one argv item);
* an empty ``/C:`` is an anonymous caller;
* unknown options and stray words are ignored (they stay in the raw argv);
* a repeated option: the last one wins, as in most Windows programs;
* a missing or unknown ``/T`` gives direction ``unknown`` (with a warning), since
  the call id and kind are still worth delivering.

What cannot be understood (no arguments, no ``/N``, an unknown ``/N``, no ``/I``,
a call id or caller id over 128 characters or with control characters) raises
:class:`LaunchError`, whose message says what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

from bridge.errors import LaunchError
from bridge.events import Direction
from bridge.text import id_problem

Kind = Literal["started", "connected", "ended"]  # a launch's; the wire's CallKind adds "invalid"

KINDS: dict[str, Kind] = {"S": "started", "C": "connected", "E": "ended"}
DIRECTIONS: dict[str, Direction] = {"I": "inbound", "O": "outbound"}
SYNTAX = "/N:S|C|E [/C:CallerId] [/T:I|O] /I:CallId"


class Launch(NamedTuple):
    """One understood launch of the registered executable."""

    kind: Kind
    direction: Direction
    call_id: str
    caller_id: str | None
    warnings: tuple[str, ...] = ()

    @property
    def anonymous(self) -> bool:
        """True when the Assistant passed an empty caller id (``/C:``)."""
        return self.caller_id is not None and not self.caller_id.strip()


def _option(item: str) -> str | None:
    """The upper-case letter of a ``/X:value`` (or ``-X:value``) item, else None."""
    if len(item) >= 3 and item[0] in "/-" and item[2] == ":" and item[1].isalpha():
        return item[1].upper()
    return None


def scan_options(argv: Sequence[str]) -> dict[str, str]:
    """Return the ``/X:value`` options of argv by upper-case letter; last one wins."""
    options: dict[str, str] = {}
    for item in argv:
        letter = _option(item)
        if letter is not None:
            options[letter] = item[3:]
    return options


def syntax_arguments(argv: Sequence[str]) -> tuple[str, ...]:
    """The items of argv that the documented syntax reads (the last /N: /C: /T: /I: each), in order.

    Everything else (stray words, unknown options, an option given again) is ignored by the parser.
    """
    last: dict[str, int] = {}
    for index, item in enumerate(argv):
        letter = _option(item)
        if letter is not None and letter in "NCTI":
            last[letter] = index
    return tuple(argv[index] for index in sorted(last.values()))


def parse_launch(argv: Sequence[str]) -> Launch:
    """Parse the arguments of one launch (without the program name).

    >>> parse_launch(["/N:S", "/C:0791234567", "/T:I", "/I:42"]).kind
    'started'
    """
    if not argv:
        raise LaunchError(f"no arguments were given; expected {SYNTAX}")
    options = scan_options(argv)
    if "N" not in options:
        raise LaunchError(f"no notification type /N: in {list(argv)!r}; expected {SYNTAX}")
    kind = KINDS.get(options["N"].strip().upper())
    if kind is None:
        raise LaunchError(f"unknown notification type /N:{options['N']!r}; expected S, C or E")
    call_id = options.get("I", "").strip()
    if not call_id:
        raise LaunchError(f"no call id /I: in {list(argv)!r}; expected {SYNTAX}")

    for name, value in (("call id /I:", call_id), ("caller id /C:", options.get("C"))):
        problem = id_problem(name, value)
        if problem:
            raise LaunchError(f"{problem}; the launch is kept as given, as an invalid event")

    warnings: list[str] = []
    raw_type = options.get("T")
    direction: Direction = "unknown"
    if raw_type is not None:
        direction = DIRECTIONS.get(raw_type.strip().upper(), "unknown")
        if direction == "unknown":
            warnings.append(f"unknown call type /T:{raw_type!r}; expected I or O")
    return Launch(
        kind=kind,
        direction=direction,
        call_id=call_id,
        caller_id=options.get("C"),
        warnings=tuple(warnings),
    )
