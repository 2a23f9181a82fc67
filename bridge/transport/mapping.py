"""pika's exceptions become ours here, the one place they are caught, and are classified.

:func:`mapped_errors` turns pika's (and the socket layer's) exceptions into the
TransportError tree of ``bridge.errors``; :func:`refused_for_good` says which of
ours retrying cannot fix.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import pika.exceptions
from pika.adapters.utils import connection_workflow

from bridge.errors import (
    AccessRefusedError,
    BrokerCertificateError,
    BrokerRefusedError,
    BrokerRejectedError,
    BrokerUnreachableError,
    PublishNackedError,
    TransportError,
    UnroutableError,
)

ACCESS_REFUSED = 403
NOT_FOUND = 404
PRECONDITION_FAILED = 406


@contextmanager
def mapped_errors(action: str, *, ca_file: str | None = None) -> Iterator[None]:
    """Turn pika's (and the socket layer's) exceptions into our TransportError tree.

    A server certificate that does not verify is for an operator (BrokerRefusedError),
    named with the CA file it was checked against (ca_file, else the system's CAs).
    """
    try:
        yield
    except pika.exceptions.UnroutableError:
        raise UnroutableError(f"{action}: the broker returned the message as unroutable") from None
    except pika.exceptions.NackError:
        raise PublishNackedError(f"{action}: the broker nacked the message") from None
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == ACCESS_REFUSED:
            raise AccessRefusedError(
                f"{action}: the broker refused: {error.reply_text}; grant the user this right "
                "(rabbitmqctl set_permissions / set_topic_permissions)"
            ) from None
        raise BrokerRejectedError(
            f"{action}: the broker refused: {error.reply_code} {error.reply_text}", error.reply_code
        ) from None
    except pika.exceptions.ProbableAuthenticationError:
        raise BrokerRefusedError(
            f"{action}: the broker refused the login (ACCESS_REFUSED); check the user and password "
            "in amqp_url"
        ) from None
    except pika.exceptions.ProbableAccessDeniedError as error:
        raise BrokerRefusedError(
            f"{action}: the broker refused the virtual host (NOT_ALLOWED: {_describe(error)}); "
            "check the vhost in amqp_url (%2F is the default one) and the user's permissions on it"
        ) from None
    except (
        pika.exceptions.AMQPConnectionError,
        pika.exceptions.ConnectionClosed,
        connection_workflow.AMQPConnectorException,  # e.g. a handshake past its timeout (not an AMQPError)
        connection_workflow.AMQPConnectionWorkflowFailed,
        ssl.SSLError,
        OSError,
    ) as error:
        inner = _innermost(error)
        if isinstance(inner, ssl.SSLCertVerificationError):
            raise _untrusted(action, inner, ca_file) from None
        detail = _describe(error)
        raise BrokerUnreachableError(f"{action}: the broker cannot be reached ({detail})") from None
    except pika.exceptions.AMQPError as error:
        raise TransportError(f"{action}: {type(error).__name__}: {error}") from None


def refused_for_good(error: Exception) -> bool:
    """Whether the broker refused a publish for a reason retrying cannot fix.

    A missing right (ACCESS_REFUSED on the exchange or, by topic permissions, on the
    routing key), an exchange that is missing and cannot be declared (NOT_FOUND),
    a message the broker will never take (PRECONDITION_FAILED: too large, a user_id
    not this user's). Unreachable, nacked, timed out: transient, not for good.
    """
    if isinstance(error, BrokerRefusedError):
        return True
    return isinstance(error, BrokerRejectedError) and error.reply_code in (
        ACCESS_REFUSED,
        NOT_FOUND,
        PRECONDITION_FAILED,
    )


def _untrusted(
    action: str, error: ssl.SSLCertVerificationError, ca_file: str | None
) -> BrokerCertificateError:
    against = f"CA file {ca_file!r}" if ca_file else "the system's CAs (no ca_file set)"
    reason = error.verify_message or str(error)
    if "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
        return BrokerCertificateError(
            f"{action}: the broker's TLS certificate is for another host name ({reason}); "
            "connect with the name the certificate was issued for",
            wrong_host=True,
        )
    return BrokerCertificateError(
        f"{action}: the broker's TLS certificate is not signed by a CA in {against} ({reason}); "
        "set ca_file to the CA that issued the broker's certificate",
        wrong_host=False,
    )


def _innermost(error: BaseException) -> BaseException:
    """The cause pika's connection workflow nests inside its own errors."""
    for _ in range(5):
        nested = getattr(error, "exceptions", None)
        if nested:
            error = nested[-1]
        elif isinstance(getattr(error, "exception", None), BaseException):
            error = error.exception  # type: ignore[attr-defined]  # pika's phase errors wrap the cause
        elif error.args and isinstance(error.args[0], BaseException):
            error = error.args[0]
        else:
            break
    return error


def _describe(error: BaseException) -> str:
    """The innermost useful text of a pika connection error (its workflow nests the cause)."""
    error = _innermost(error)
    return str(error) or type(error).__name__
