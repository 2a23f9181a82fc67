"""The one exception tree of tcx-bridge.

    TcxBridgeError                  anything this project raises on purpose
    ├── ConfigError                 a setting has a bad value, or the config file is unreadable
    ├── LaunchError                 a 3CX Assistant launch cannot be understood
    ├── OutboxError                 the local outbox cannot be written or read
    ├── StoreError                  a store (SQLite, PostgreSQL) or the data dir cannot be used
    │   └── StoreUnavailableError   ... for now: the database server is away (restart, failover)
    ├── DialError                   a dial request is not acceptable: a bad number
    │   └── DialExpiredError        ... or it expired before it could be dialed
    ├── HandlerError                a message that can never be handled: dead-letter it at once
    ├── TransientError              a message's side effect failed for now (a CRM away): retry it
    └── TransportError              anything between us and the broker (pika never escapes transport.py)
        ├── BrokerUnreachableError  no connection: refused, timed out, TLS or login failed
        ├── BrokerRejectedError     the broker closed the channel (a missing exchange, ...)
        ├── BrokerRefusedError      an operator must fix it: login, vhost, permissions, a queue's arguments
        │   ├── BrokerCertificateError  ... the broker's TLS certificate: another host's, or an unknown CA
        │   └── AccessRefusedError  ... the user lacks a right (ACCESS_REFUSED on a channel)
        └── PublishError            the message was not confirmed
            ├── PublishNackedError  the broker nacked it
            └── UnroutableError     mandatory publish returned: nothing was bound for it

Every message is one sentence that quotes the bad value and says the fix.

Transient or permanent: a TransportError is transient (retry with backoff),
except BrokerRefusedError, which stops a long-running process with one line.
StoreUnavailableError is transient the same way (the batch stays unacked and
the consumer reconnects); any other StoreError is for an operator to fix.
Every other TcxBridgeError about a message is permanent for that message.
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


class StoreError(TcxBridgeError):
    """A local store or the data dir cannot be used (missing, not a directory, no rights, full)."""


class StoreUnavailableError(StoreError):
    """The store's database server cannot be reached for now: reconnect with backoff, redeliver."""


class DialError(TcxBridgeError):
    """A dial request is not acceptable."""


class DialExpiredError(DialError):
    """A dial request expired before it could be dialed."""


class HandlerError(TcxBridgeError):
    """A message can never be handled (it is dead-lettered without retries)."""


class TransientError(TcxBridgeError):
    """A message's side effect failed for a reason that may pass (it is retried with backoff)."""


class TransportError(TcxBridgeError):
    """Something between us and the broker failed."""


class BrokerUnreachableError(TransportError):
    """No connection to the broker."""


class BrokerRejectedError(TransportError):
    """The broker closed the channel."""

    def __init__(self, message: str, reply_code: int = 0) -> None:
        super().__init__(message)
        self.reply_code = reply_code


class BrokerRefusedError(TransportError):
    """The broker refused us for a reason retrying cannot fix (credentials, vhost, rights, arguments)."""


class AccessRefusedError(BrokerRefusedError):
    """The broker closed the channel with ACCESS_REFUSED: the user lacks the right to that action."""


class BrokerCertificateError(BrokerRefusedError):
    """The broker's TLS certificate does not verify: issued for another host name, or by an unknown CA."""

    def __init__(self, message: str, *, wrong_host: bool) -> None:
        super().__init__(message)
        self.wrong_host = wrong_host


class PublishError(TransportError):
    """A message was not confirmed by the broker."""


class PublishNackedError(PublishError):
    """The broker nacked a message."""


class UnroutableError(PublishError):
    """A mandatory message was returned as unroutable."""


def path_problem(error: OSError, where: object) -> str:
    """One line for a file-system error: which path, what is wrong, what to do."""
    path = error.filename or str(where)
    what = {
        PermissionError: "is not writable or readable for this user",
        NotADirectoryError: "is (or lies under) a file where a directory must be",
        FileNotFoundError: "does not exist",
        IsADirectoryError: "is a directory where a file must be",
        FileExistsError: "exists as a file where a directory must be",
    }.get(type(error), error.strerror or str(error))
    return f"{str(path)!r} {what}; fix it or point TCX_BRIDGE_DATA_DIR at a writable directory"


def check_directory(path: object) -> None:
    """StoreError when path, or a directory above it, is a file (so nothing could ever be stored there)."""
    from pathlib import Path

    for candidate in (Path(str(path)), *Path(str(path)).parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise StoreError(
                    path_problem(NotADirectoryError(20, "Not a directory", str(candidate)), path)
                )
            return
