"""Standard Webhooks signing (https://www.standardwebhooks.com, "Signature scheme").

A secret is ``whsec_`` + base64 of 24 to 64 random bytes; the key is the decoded bytes. Each attempt
carries ``webhook-id`` (the message id, the same on every attempt), ``webhook-timestamp`` (unix
seconds of this attempt) and ``webhook-signature: v1,<base64 of HMAC-SHA256(key,
"{id}.{timestamp}.{body}")>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Final

SECRET_PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 32  # generated secrets
MIN_SECRET_BYTES: Final = 24  # the spec's recommended range for given secrets
MAX_SECRET_BYTES: Final = 64


class BadSecret(ValueError):
    """A secret that is not ``whsec_<base64 of 24..64 bytes>``."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; BadSecret says what is wrong with it."""
    if not secret.startswith(SECRET_PREFIX):
        raise BadSecret(f"must start with {SECRET_PREFIX!r} followed by base64")
    try:
        encoded = secret[len(SECRET_PREFIX):]
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)  # padding optional
    except binascii.Error:
        raise BadSecret(f"the part after {SECRET_PREFIX!r} is not valid base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise BadSecret(f"must decode to {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, got {len(key)}")
    return key


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value of one attempt."""
    signed = message_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, message_id, timestamp, body),
    }
