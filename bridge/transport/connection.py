"""One connection with one channel in publisher-confirm mode, to the first broker node that answers."""

from __future__ import annotations

import logging
import ssl

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from bridge.config import host_port, split_urls
from bridge.envelope import OutgoingMessage
from bridge.errors import BrokerRefusedError, BrokerUnreachableError
from bridge.transport.mapping import mapped_errors

logger = logging.getLogger("bridge.transport")


def parameters(url: str, *, ca_file: str | None = None, timeout: float = 5.0) -> pika.URLParameters:
    """Connection parameters for url; amqps:// verifies the certificate (optionally against ca_file)."""
    try:
        params = pika.URLParameters(url)
    except ValueError as error:
        raise BrokerUnreachableError(f"broker URL is not usable: {error}") from None
    if params.ssl_options is not None and ca_file:
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except ssl.SSLError as error:  # retrying cannot fix a file: an operator must
            raise BrokerRefusedError(
                f"CA file {ca_file!r} is not a PEM CA bundle ({error.reason or error}); set ca_file to a "
                "file of -----BEGIN CERTIFICATE----- blocks (convert DER with openssl x509 -inform der)"
            ) from None
        except OSError as error:
            raise BrokerRefusedError(
                f"CA file {ca_file!r} cannot be read ({error.strerror or error}); "
                "fix ca_file or the file's rights"
            ) from None
        params.ssl_options = pika.SSLOptions(context, params.host)
    params.connection_attempts = 1
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = timeout
    return params


class Connection:
    """Connect to the first node that answers, keep one confirm-mode channel, close: what the rest builds on.

    The parameters are :class:`bridge.transport.Broker`'s, which says what they do.
    """

    def __init__(
        self,
        url: str,
        *,
        ca_file: str | None = None,
        timeout: float = 5.0,
        start: int = 0,
        connect_timeout: float | None = None,
        sign: bool = True,
    ) -> None:
        """sign: every publish carries user_id = this connection's user (the broker checks it)."""
        each = timeout if connect_timeout is None else min(connect_timeout, timeout)
        self._params = [parameters(one, ca_file=ca_file, timeout=each) for one in split_urls(url)]
        self._ca_file = ca_file
        self._sign = sign
        if not self._params:
            raise BrokerUnreachableError("no broker URL given")
        for params in self._params:
            params.blocked_connection_timeout = timeout
        self.start = start % len(self._params)
        self.index = self.start
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    @property
    def node(self) -> str:
        """host:port of the node this connection is on (or will try first)."""
        params = self._params[self.index]
        return host_port(params.host, params.port)

    def _signed(self, message: OutgoingMessage) -> OutgoingMessage:
        if not self._sign or message.user_id is not None:
            return message
        return message._replace(user_id=self.username)

    @property
    def username(self) -> str:
        """The user this connection logs in as (what a publish's user_id must be)."""
        credentials = self._params[self.index].credentials
        return str(getattr(credentials, "username", "guest"))

    @property
    def size(self) -> int:
        """How many broker addresses there are."""
        return len(self._params)

    def connect(self) -> None:
        """Connect to the first address that answers, from ``start`` on; an operator error stops at once."""
        failures: list[str] = []
        for offset in range(len(self._params)):
            index = (self.start + offset) % len(self._params)
            params = self._params[index]
            try:
                with mapped_errors(
                    f"connect to {host_port(params.host, params.port)}", ca_file=self._ca_file
                ):
                    self._connection = pika.BlockingConnection(params)
            except BrokerUnreachableError as error:
                failures.append(str(error))
                continue
            self.index = index
            if len(self._params) > 1:
                logger.info("connected to broker node %s:%s", params.host, params.port)
            return
        if len(failures) == 1:
            raise BrokerUnreachableError(failures[0])
        raise BrokerUnreachableError(f"no broker node answers: {'; '.join(failures)}")

    @property
    def channel(self) -> BlockingChannel:
        """The open channel, reopened (with confirms) after the broker closed it."""
        if self._connection is None or not self._connection.is_open:
            raise BrokerUnreachableError("the connection to the broker is closed")
        if self._channel is None or not self._channel.is_open:
            with mapped_errors("open a channel"):
                self._channel = self._connection.channel()
                self._channel.confirm_delivery()
        return self._channel

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError) as error:  # closing is best effort
                logger.debug("closing the connection failed: %s", error)
