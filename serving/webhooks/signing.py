"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

Each request carries ``webhook-id`` (the message id: the same on every retry and replay,
so receivers deduplicate by it), ``webhook-timestamp`` (Unix seconds of this try) and
``webhook-signature``: ``v1,`` + base64 of HMAC-SHA256 over ``"{id}.{timestamp}.{body}"``
keyed with the secret's bytes. A secret is written ``whsec_`` + base64 of 24 to 64
random bytes, as the specification recommends. Receivers should refuse a timestamp
more than 5 minutes from their clock (replayed captures).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
#: The longest secret text accepted: the prefix and the base64 of 64 bytes.
MAX_SECRET_LENGTH = len(SECRET_PREFIX) + 4 * ((MAX_SECRET_BYTES + 2) // 3)
TOLERANCE_S = 300


def new_secret() -> str:
    """A fresh ``whsec_`` secret of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def secret_problem(secret: str) -> str | None:
    """Why a secret cannot be used (in words that never quote it), or None."""
    if len(secret) > MAX_SECRET_LENGTH:
        return f"too long (at most {MAX_SECRET_LENGTH} characters)"
    if not secret.startswith(SECRET_PREFIX):
        return f"must start with {SECRET_PREFIX}"
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return f"must be {SECRET_PREFIX} followed by base64"
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        return f"must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes once decoded"
    return None


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (checked with :func:`secret_problem`)."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(
    secret: str, message_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one try of a message."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, message_id, stamp, body),
    }


def verify(
    secret: str,
    message_id: str,
    timestamp: str,
    signature: str,
    body: bytes,
    *,
    now: float | None = None,
) -> bool:
    """A receiver's check: a fresh timestamp and one matching ``v1`` signature."""
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - stamp) > TOLERANCE_S:
        return False
    expected = sign(secret, message_id, stamp, body)
    return any(hmac.compare_digest(expected, given) for given in signature.split(" "))
