"""The one exception tree of tcx-bridge.

    TcxBridgeError                  anything this project raises on purpose
    ├── ConfigError                 a setting has a bad value, or the config file is unreadable
    ├── LaunchError                 a 3CX Assistant launch cannot be understood
    ├── OutboxError                 the local outbox cannot be written or read
    ├── DialError                   a dial request is not acceptable: a bad number
    │   └── DialExpiredError        ... or it expired before it could be dialed
    ├── HandlerError                a message that can never be handled: dead-letter it at once
    └── TransportError              anything between us and the broker (pika never escapes transport.py)
        ├── BrokerUnreachableError  no connection: refused, timed out, TLS or login failed
        ├── BrokerRejectedError     the broker closed the channel (missing exchange, access refused)
        └── PublishError            the message was not confirmed
            ├── PublishNackedError  the broker nacked it
            └── UnroutableError     mandatory publish returned: nothing was bound for it

Every message is one sentence that quotes the bad value and says the fix.
"""

from __future__ import annotations


class TcxBridgeError(Exception):
    """Base of every error tcx-bridge raises on purpose."""


class ConfigError(TcxBridgeError):
    """A setting has a bad value."""


class LaunchError(TcxBridgeError):
    """A 3CX Assistant launch cannot be understood."""


class OutboxError(TcxBridgeError):
    """The local outbox cannot be written or read."""


class DialError(TcxBridgeError):
    """A dial request is not acceptable."""


class DialExpiredError(DialError):
    """A dial request expired before it could be dialed."""


class HandlerError(TcxBridgeError):
    """A message can never be handled (it is dead-lettered without retries)."""


class TransportError(TcxBridgeError):
    """Something between us and the broker failed."""


class BrokerUnreachableError(TransportError):
    """No connection to the broker."""


class BrokerRejectedError(TransportError):
    """The broker closed the channel."""

    def __init__(self, message: str, reply_code: int = 0) -> None:
        super().__init__(message)
        self.reply_code = reply_code


class PublishError(TransportError):
    """A message was not confirmed by the broker."""


class PublishNackedError(PublishError):
    """The broker nacked a message."""


class UnroutableError(PublishError):
    """A mandatory message was returned as unroutable."""
