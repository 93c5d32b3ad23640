"""Signing and verifying moments webhook requests (HMAC-SHA256), for us and for receivers.

Every webhook POST carries three headers:

- ``X-Moments-Timestamp``: the time of this delivery attempt, integer Unix seconds;
- ``X-Moments-Key-Id``: which of the destination's secrets signed it (secrets
  are rotated by listing a new one first and dropping the old one later);
- ``X-Moments-Signature``: ``sha256=<hex>``, the HMAC-SHA256, keyed with that
  secret, of ``<timestamp>`` LF ``<url>`` LF followed by the raw request body
  bytes exactly as received, where ``<url>`` is the destination URL exactly as
  configured in ``MOMENTS_WEBHOOK_URLS``.

The timestamp is inside the signed bytes, so a captured request cannot be
replayed later with a fresh timestamp; the URL is too, so a request captured
at one destination cannot be replayed to another that shares its secret. A
receiver rejects timestamps outside a tolerance (5 minutes by default) and
drops repeated CloudEvent ``id`` values (the action id: deliveries are
at-least-once). A receiver in Python::

    from sinks.signing import verify_signature, SignatureError

    secrets = {"2026-07": new_secret, "2026-01": old_secret}   # key id -> secret
    try:
        verify_signature(secrets, body, request.headers, url=MY_URL)   # body: the raw bytes
    except SignatureError as exc:
        return 401, str(exc)

Anywhere else: pick the secret named by ``X-Moments-Key-Id``, compute
``hex(hmac_sha256(secret, f"{timestamp}\\n{url}\\n".encode() + body))``, compare
in constant time with the hex after ``sha256=``, and check the timestamp is
recent. This module imports nothing of ours and never logs or puts a secret,
a URL or a body in an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from typing import Final

SIGNATURE_HEADER: Final = "X-Moments-Signature"
TIMESTAMP_HEADER: Final = "X-Moments-Timestamp"
KEY_ID_HEADER: Final = "X-Moments-Key-Id"
SCHEME: Final = "sha256"
DEFAULT_TOLERANCE_S: Final = 300.0
#: What a key id may look like (it travels in a header): 1 to 64 of A-Z a-z 0-9 . _ -
KEY_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


class SignatureError(ValueError):
    """A webhook request whose signature is missing, malformed, stale or wrong (says which)."""


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def signed_bytes(timestamp: int, url: str, body: bytes) -> bytes:
    """What the HMAC covers: timestamp, LF, destination URL, LF, raw body."""
    return f"{timestamp}\n{url}\n".encode() + body


def sign(secret: str | bytes, body: bytes, timestamp: int, url: str) -> str:
    """The `X-Moments-Signature` value for `body` sent to `url` at `timestamp` (Unix seconds)."""
    digest = hmac.new(_key(secret), signed_bytes(timestamp, url, body), hashlib.sha256)
    return f"{SCHEME}={digest.hexdigest()}"


def signature_headers(
    secret: str | bytes, body: bytes, url: str, key_id: str, timestamp: int | None = None
) -> dict[str, str]:
    """The three headers of one delivery attempt (timestamp defaults to now)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        TIMESTAMP_HEADER: str(ts),
        KEY_ID_HEADER: key_id,
        SIGNATURE_HEADER: sign(secret, body, ts, url),
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def _candidates(
    secrets: str | bytes | Mapping[str, str | bytes], key_id: str | None
) -> list[str | bytes]:
    """The secrets to try: the one the key id names, or every listed one without a key id."""
    if isinstance(secrets, str | bytes):
        return [secrets]
    if not secrets:
        raise ValueError("no webhook secrets given")
    if key_id is None:
        return list(secrets.values())
    if key_id not in secrets:
        raise SignatureError(f"{KEY_ID_HEADER} names a key this receiver does not hold")
    return [secrets[key_id]]


def verify_signature(
    secrets: str | bytes | Mapping[str, str | bytes],
    body: bytes,
    headers: Mapping[str, str],
    *,
    url: str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check a received request; return its timestamp, or raise `SignatureError` saying why.

    `secrets` is one secret, or a mapping of key id to secret (every key still
    accepted during a rotation): the key named by `X-Moments-Key-Id` must be
    among them, and without that header any of them may match. `url` is this
    receiver's URL exactly as configured in `MOMENTS_WEBHOOK_URLS`. `headers`
    is any mapping of the request's headers (names case-insensitive); `body`
    the raw bytes as received, before any JSON parsing.
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
    key_id = _header(headers, KEY_ID_HEADER)
    matched = False
    for secret in _candidates(secrets, None if key_id is None else key_id.strip()):
        expected = sign(secret, body, timestamp, url).partition("=")[2]
        matched |= hmac.compare_digest(expected, received.lower())
    if not matched:
        raise SignatureError(
            f"{SIGNATURE_HEADER} does not match (wrong secret, body or destination URL)"
        )
    return timestamp
