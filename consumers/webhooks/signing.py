"""Signatures as the Standard Webhooks specification defines them (standardwebhooks.com).

Three headers on every request::

    webhook-id         the event id: the same on every retry, so a receiver drops duplicates
    webhook-timestamp  seconds since the epoch, when this attempt was signed
    webhook-signature  v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>"> for each secret, space-separated

A secret is ``whsec_`` and the base64 of its key bytes (:func:`new_secret` makes 24
random bytes); while rotating, two secrets sign each request, so a receiver holding
either verifies it. Receivers verify with any Standard Webhooks library (docs/webhooks.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from bridge.errors import ConfigError

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh secret in the whsec_ form (24 random bytes, as the reference libraries make them)."""
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def key_of(secret: str) -> bytes:
    """The key bytes of a whsec_ secret."""
    return base64.b64decode(secret.removeprefix(PREFIX), validate=True)


def check_secret(secret: str, where: str) -> None:
    """ConfigError naming where a secret that is not whsec_<base64> came from (never the secret itself)."""
    try:
        key = key_of(secret) if secret.startswith(PREFIX) else b""
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < 16:
        raise ConfigError(
            f"{where}: not a whsec_ secret of 16 bytes at least (whsec_<base64>); "
            "make one with tcx-bridge webhooks secret"
        )


def signature_headers(
    keys: tuple[bytes, ...], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (no signature header without a key)."""
    headers = {"webhook-id": message_id, "webhook-timestamp": str(timestamp)}
    if keys:
        signed = f"{message_id}.{timestamp}.".encode() + body
        headers["webhook-signature"] = " ".join(
            "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in keys
        )
    return headers
