"""Attacks on the webhooks' SSRF guard and on their secrets, as an outsider would try them.

A target's URL comes from the operator, its DNS answers from whoever owns the name:
the name may resolve to a public address when the guard checks it and to this
machine when the request connects (DNS rebinding). The resolver is the one thing
stood in for here (no DNS server of ours); the receiver is a real local HTTP server.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from consumers.webhooks.delivery import Sender
from consumers.webhooks.guard import RefusedAddressError, check_url, refused_address
from consumers.webhooks.settings import Target
from tests.conftest import free_port_in
from tests.webhook_receiver import Receiver

PUBLIC = "93.184.215.14"
TOKEN = "zammad-cti-token-4f9c2"


def port_of_ours() -> int:
    """A free port in this module's range (18400-18449)."""
    return free_port_in(range(18400, 18450))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(port_of_ours()) as running:
        yield running


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """rebind.example resolves to a public address the first time, to 127.0.0.1 after (TTL 0)."""
    real = socket.getaddrinfo
    answers: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        address = PUBLIC if not answers else "127.0.0.1"
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 80)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def test_a_name_that_rebinds_to_this_machine_reaches_nothing(
    receiver: Receiver, rebinding: list[str]
) -> None:
    """The guard saw a public address; the request's own lookup gave 127.0.0.1: nothing may arrive."""
    sender = Sender(Target(name="helpdesk", url=f"http://rebind.example:{receiver.port}/hook"))
    try:
        result = sender.post(b"{}", {"content-type": "application/json"})
    finally:
        sender.close()
    assert rebinding[:2] == [PUBLIC, "127.0.0.1"]  # the guard's lookup, then the connection's
    assert receiver.count("/hook") == 0
    assert result.verdict != "delivered"
    assert "the connection went to 127.0.0.1, a loopback address" in result.reason


def test_a_target_allowed_private_still_reaches_this_machine(receiver: Receiver) -> None:
    sender = Sender(Target(name="local", url=receiver.url("/hook"), allow_private=True))
    try:
        assert sender.post(b"{}", {}).verdict == "delivered"
    finally:
        sender.close()
    assert receiver.count("/hook") == 1


@pytest.mark.parametrize(
    "host",
    [
        "[::1]",
        "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
        "[0:0:0:0:0:ffff:7f00:1]",
        "2130706433",  # decimal
        "0x7f.1",  # hex, short form
        "017700000001",  # octal
        "127.1",
        "0",
        "127。0。0。1",  # ideographic full stops, which IDNA makes dots
        "100.64.0.1",  # shared address space (carrier-grade NAT): not public
        "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
        "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
        "example.com\\@127.0.0.1",  # urlsplit and httpx agree on the host: 127.0.0.1
    ],
)
def test_every_spelling_of_a_local_address_is_refused(host: str) -> None:
    with pytest.raises(RefusedAddressError):
        check_url("t", f"http://{host}/hook", allow_private=False)


@pytest.mark.parametrize("address", ["100.64.0.1", "2002:7f00:1::", "2001:0:4136:e378:8000:63bf:80ff:fffe"])
def test_addresses_that_are_not_public_are_refused(address: str) -> None:
    assert refused_address(address) is not None


def test_a_refusal_names_no_token_and_no_password() -> None:
    """The URL's path (Zammad's CTI token) and user part reach the logs and the dead letters' reason."""
    url = f"http://operator:hunter2@127.0.0.1:18449/api/v1/cti/{TOKEN}"
    with pytest.raises(RefusedAddressError) as refused:
        check_url("helpdesk", url, allow_private=False)
    said = str(refused.value)
    assert "'http://127.0.0.1:18449/…' resolves to 127.0.0.1, a loopback address" in said
    assert TOKEN not in said
    assert "hunter2" not in said
    sender = Sender(Target(name="helpdesk", url=url))
    try:
        result = sender.post(b"{}", {})
    finally:
        sender.close()
    assert (result.verdict, TOKEN in result.reason, "hunter2" in result.reason) == ("dead", False, False)


def test_a_redirect_to_another_place_is_not_followed(receiver: Receiver) -> None:
    receiver.behaviours["/hook"] = lambda _: (307, {"location": receiver.url("/inside")})
    sender = Sender(Target(name="local", url=receiver.url("/hook"), allow_private=True))
    try:
        result = sender.post(b"{}", {})
    finally:
        sender.close()
    assert (result.verdict, result.status) == ("dead", 307)
    assert (receiver.count("/hook"), receiver.count("/inside")) == (1, 0)


class Flood:
    """A target that answers 200 with a body of size bytes, written until the client stops reading."""

    def __init__(self, port: int, size: int) -> None:
        self.size, self.written = size, 0
        self.listener = socket.create_server(("127.0.0.1", port))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            head = b""
            while b"\r\n\r\n" not in head:
                head += connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % self.size)
            chunk = bytes(1 << 20)
            try:
                while self.written < self.size:
                    connection.sendall(chunk)
                    self.written += len(chunk)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


def test_a_target_cannot_flood_the_consumer_with_its_answer() -> None:
    """A target (or whoever took it over) answered with a body of 512 MB: the consumer read it all into
    memory, one such answer per request in flight, every target's deliveries in that one process."""
    flood = Flood(port_of_ours(), 512 << 20)
    sender = Sender(
        Target(name="flood", url=f"http://127.0.0.1:{flood.listener.getsockname()[1]}/", allow_private=True)
    )
    try:
        result = sender.post(b"{}", {})
    finally:
        sender.close()
        flood.close()
    assert (result.verdict, result.status) == ("delivered", 200)
    assert flood.written < 64 << 20  # what the sockets' buffers held, not the body
