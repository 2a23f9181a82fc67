"""The SSRF guard: a target's URL may not reach this machine or the private network unless allowed.

An address that is loopback, link-local (169.254.x.x: cloud metadata), private
(RFC 1918, fc00::/7), unspecified, multicast or reserved is refused unless the
target says ``allow_private = true``. Every address the host name resolves to is
checked, when the consumer starts and again before requests once RECHECK seconds
have passed (a name that comes to resolve elsewhere is caught then; a resolver
that answers differently within those seconds is not: put such targets behind an
egress proxy).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from urllib.parse import urlsplit

from bridge.errors import ConfigError

RECHECK = 60.0


class RefusedAddressError(ConfigError):
    """A target's URL resolves to an address the SSRF guard refuses."""


def refused_address(address: str) -> str | None:
    """What is wrong with an address for a target without allow_private, or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return kind
    return None


def check_url(name: str, url: str, allow_private: bool) -> None:
    """RefusedAddressError when url's host resolves to a refused address; ConfigError if it cannot."""
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as error:
        raise ConfigError(f"webhook {name!r}: host {host!r} does not resolve: {error}") from None
    for info in infos:
        address = str(info[4][0])
        kind = refused_address(address)
        if kind:
            raise RefusedAddressError(
                f"webhook {name!r}: {url!r} resolves to {address}, a {kind} address; "
                "set allow_private = true on that target if it is meant"
            )


class Guard:
    """check_url for one target, again at most every RECHECK seconds."""

    def __init__(self, name: str, url: str, allow_private: bool, recheck: float = RECHECK) -> None:
        self.name, self.url, self.allow_private, self.recheck = name, url, allow_private, recheck
        self._next = 0.0
        self._lock = threading.Lock()

    def check(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        with self._lock:
            check_url(self.name, self.url, self.allow_private)
            self._next = now + self.recheck
