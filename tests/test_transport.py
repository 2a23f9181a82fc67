"""Connection parameters: amqps verifies the server; pika's errors become ours."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from bridge.errors import BrokerRefusedError, BrokerUnreachableError
from bridge.transport import Broker, parameters


def test_amqps_verifies_the_certificate_and_host_name() -> None:
    params = parameters("amqps://user:secret@mq.example.com/%2F", timeout=2)
    assert params.port == 5671
    assert params.ssl_options is not None
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_plain_amqp_has_no_tls_and_bounded_timeouts() -> None:
    params = parameters("amqp://guest:guest@localhost:5672/%2F", timeout=1.5)
    assert params.ssl_options is None
    assert (params.socket_timeout, params.stack_timeout, params.blocked_connection_timeout) == (1.5, 1.5, 1.5)
    assert params.connection_attempts == 1


# a CA file that is not PEM: text, DER bytes, an empty file; an operator must fix it, retrying cannot
@pytest.mark.parametrize("content", [b"not a certificate", bytes(range(256)) * 4, b""])
def test_a_ca_file_that_is_not_pem_is_an_operator_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "ca.der"
    bad.write_bytes(content)
    with pytest.raises(BrokerRefusedError) as caught:
        parameters("amqps://mq.example.com/", ca_file=str(bad))
    assert str(caught.value) == (
        f"CA file {str(bad)!r} is not a PEM CA bundle (NO_CERTIFICATE_OR_CRL_FOUND); set ca_file to a file of "
        "-----BEGIN CERTIFICATE----- blocks (convert DER with openssl x509 -inform der)"
    )


def test_an_unreadable_ca_file_is_an_operator_error(tmp_path: Path) -> None:
    with pytest.raises(BrokerRefusedError) as caught:
        parameters("amqps://mq.example.com/", ca_file=str(tmp_path))  # a directory
    assert str(caught.value).startswith(f"CA file {str(tmp_path)!r} cannot be read (")


def test_unreachable_broker_is_our_error_naming_host_and_cause() -> None:
    with pytest.raises(BrokerUnreachableError) as caught:
        Broker("amqp://guest:guest@127.0.0.1:1/%2F", timeout=1).connect()
    assert str(caught.value) == (
        "connect to 127.0.0.1:1: the broker cannot be reached ([Errno 111] Connection refused)"
    )


def test_a_handshake_timeout_is_an_unreachable_broker_not_a_bug() -> None:
    """pika raises AMQPConnectorStackTimeout, which is no AMQPError, when a node is too slow to answer."""
    from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout

    from bridge.errors import BrokerUnreachableError
    from bridge.transport import mapped_errors

    with pytest.raises(BrokerUnreachableError, match="connect to mq2:5672: the broker cannot be reached"):
        with mapped_errors("connect to mq2:5672"):
            raise AMQPConnectorStackTimeout("Timeout during AMQP handshake")
