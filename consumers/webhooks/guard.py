"""The SSRF guard: a target's URL may not reach this machine or the private network unless allowed.

An address that is loopback, link-local (169.254.x.x: cloud metadata), private
(RFC 1918, fc00::/7), unspecified, multicast or reserved is refused unless the
target says ``allow_private = true``. Every address the host name resolves to is
checked, when the consumer starts and again before requests once RECHECK seconds
have passed (a name that comes to resolve elsewhere is caught then; a resolver
that answers differently within those seconds is caught when the request connects:
:class:`CheckedBackend` refuses a connection whose peer is such an address, so a name
that resolves to a public address for the check and to this machine for the request
(DNS rebinding) reaches nothing). Messages name the URL as :func:`shown_url` writes it:
its path may hold a token (Zammad's does) and its user part a password.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpcore

from bridge.errors import ConfigError

RECHECK = 60.0


class RefusedAddressError(ConfigError):
    """A target's URL resolves to an address the SSRF guard refuses."""


def shown_url(url: str) -> str:
    """scheme://host[:port]/… : a path may hold a token (Zammad's does), a user part a password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{'/…' if parts.path.strip('/') else '/'}"


def refused_address(address: str) -> str | None:
    """What is wrong with an address for a target without allow_private, or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):  # an IPv4 address inside (mapped, 6to4, Teredo) is judged
        ip = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None) or ip
    for kind, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("non-public", not ip.is_global),  # shared (100.64/10), documentation, benchmarking ranges
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
                f"webhook {name!r}: {shown_url(url)!r} resolves to {address}, a {kind} address; "
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


class CheckedBackend(httpcore.NetworkBackend):
    """httpcore's own backend, but a connection whose peer is a refused address is closed unused.

    The guard's check resolves the name; the request resolves it again: this is where a
    name that answers differently the second time (DNS rebinding) is caught.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self.backend.connect_tcp(host, port, timeout, local_address, socket_options)
        peer = str(stream.get_extra_info("server_addr")[0])
        kind = refused_address(peer)
        if kind:
            stream.close()
            raise httpcore.ConnectError(
                f"webhook {self.name!r}: the connection went to {peer}, a {kind} address (the name "
                "resolved to a public one before); set allow_private = true on that target if it is meant"
            )
        return stream

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError(f"webhook {self.name!r}: no Unix sockets")

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)
