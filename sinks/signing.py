"""Signing and verifying moments webhook requests (HMAC-SHA256), for us and for receivers.

Every webhook POST carries two headers:

- ``X-Moments-Timestamp``: the time of this delivery attempt, integer Unix seconds;
- ``X-Moments-Signature``: ``sha256=<hex>``, the HMAC-SHA256, keyed with the shared
  secret (``MOMENTS_WEBHOOK_SECRET``), of ``<timestamp>.`` followed by the raw
  request body bytes, exactly as received.

The timestamp is inside the signed bytes, so a captured request cannot be
replayed later with a fresh timestamp; a receiver rejects timestamps outside a
tolerance (5 minutes by default) and drops repeated CloudEvent ``id`` values
(the action id: deliveries are at-least-once). A receiver in Python::

    from sinks.signing import verify_signature, SignatureError

    try:
        verify_signature(secret, body, request.headers)   # body: the raw bytes
    except SignatureError as exc:
        return 401, str(exc)

Anywhere else: compute ``hex(hmac_sha256(secret, f"{timestamp}.".encode() + body))``,
compare in constant time with the hex after ``sha256=``, and check the
timestamp is recent. This module imports nothing of ours and never logs or
puts the secret or a body in an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Final

SIGNATURE_HEADER: Final = "X-Moments-Signature"
TIMESTAMP_HEADER: Final = "X-Moments-Timestamp"
SCHEME: Final = "sha256"
DEFAULT_TOLERANCE_S: Final = 300.0


class SignatureError(ValueError):
    """A webhook request whose signature is missing, malformed, stale or wrong (says which)."""


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The `X-Moments-Signature` value for `body` sent at `timestamp` (Unix seconds)."""
    digest = hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={digest.hexdigest()}"


def signature_headers(
    secret: str | bytes, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """Both headers for one delivery attempt (timestamp defaults to now)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, body, ts)}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def verify_signature(
    secret: str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check a received request; return its timestamp, or raise `SignatureError` saying why.

    `headers` is any mapping of the request's headers (names case-insensitive);
    `body` the raw bytes as received, before any JSON parsing.
    """
    signature = _header(headers, SIGNATURE_HEADER)
    raw_timestamp = _header(headers, TIMESTAMP_HEADER)
    if signature is None:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    if raw_timestamp is None:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} header")
    try:
        timestamp = int(raw_timestamp.strip())
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not integer Unix seconds") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError(
            f"{TIMESTAMP_HEADER} is {current - timestamp:+.0f} s from now "
            f"(tolerance {tolerance_s:.0f} s): stale or replayed request"
        )
    scheme, _, received = signature.strip().partition("=")
    if scheme != SCHEME or not received:
        raise SignatureError(f"{SIGNATURE_HEADER} must look like '{SCHEME}=<hex>'")
    expected = sign(secret, body, timestamp).partition("=")[2]
    if not hmac.compare_digest(expected, received.lower()):
        raise SignatureError(f"{SIGNATURE_HEADER} does not match the body (wrong secret or body)")
    return timestamp
