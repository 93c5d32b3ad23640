"""Customer data and secrets at the edges: hashed ids, redacted URLs, API keys.

Small helpers every process shares (producers, processors and sinks may all
import this module; it imports nothing of ours):

- `hashed_id(customer_id)`: what a log line, an audit line or an error message
  says instead of a customer id (sha256, hex). Logs, errors and metric labels
  never hold a customer id, free text or an address in clear.
- `redact_url(url)`: a URL with its password and query values masked, for
  anything printed (settings repr, start-up lines).
- `KeyRing`: the API keys a server accepts, matched in constant time
  (`hmac.compare_digest` against every key, so the time taken does not tell
  which one came close), each known by a name that is not the key.
- `RateLimiter`: a token bucket per key name, the per-key rate limit of the
  collector (events) and of the read API (requests).

The erasure record (`moments forget`: a tombstone on `interactions` keyed by
the customer id, header `moments.control: forget`) is part of the wire
contract and lives in `schemas.wire` with the other control records.

It must never log or return a secret or a customer id in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: What a masked secret looks like wherever one would have been printed.
MASK: Final = "**********"


def hashed_id(customer_id: str) -> str:
    """The sha256 of a customer id (hex): how logs, audit lines and errors name a customer."""
    return hashlib.sha256(customer_id.encode("utf-8")).hexdigest()


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """URL with its password and every query value masked (host, query names kept).

    `https://user:pw@reg.example/x?token=abc` -> `https://user:**********@reg.example/x?token=**********`.
    Without `keep_path` the path is masked too (webhook URLs often carry a token in their
    path). Text that is not a URL with a scheme is returned unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(name, MASK) for name, _ in pairs], safe="*")
    fragment = MASK if parts.fragment else ""
    path = parts.path if keep_path or parts.path in ("", "/") else "/" + MASK
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def is_loopback(host: str) -> bool:
    """Whether binding HOST serves this machine only (127.0.0.0/8, ::1, `localhost`)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def key_name(key: bytes) -> str:
    """The name a key goes by in audit lines: `key-` + the first 8 hex of its sha256."""
    return "key-" + hashlib.sha256(key).hexdigest()[:8]


class KeyRing:
    """The API keys a server accepts, each with a name for audit lines (never the key).

    `match(given)` compares the given key with every key in constant time and
    returns the matching key's name, or None.
    """

    def __init__(self, keys: Iterable[bytes] | Mapping[str, bytes]) -> None:
        if isinstance(keys, Mapping):
            self._keys = [(name, key) for name, key in keys.items() if key]
        else:
            self._keys = [(key_name(key), key) for key in keys if key]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing({', '.join(name for name, _ in self._keys)})"

    def match(self, given: str | bytes) -> str | None:
        """The name of the key equal to GIVEN, compared in constant time with every key."""
        candidate = given.encode("utf-8") if isinstance(given, str) else given
        found: str | None = None
        for name, key in self._keys:
            if hmac.compare_digest(candidate, key) and found is None:
                found = name
        return found


def presented_key(headers: Mapping[str, str]) -> str:
    """The API key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    scheme, _, credential = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip()
    return headers.get("x-api-key", "").strip()


class RateLimiter:
    """A token bucket per caller: `rate` tokens per second, bursts up to `burst` (default: one
    second's worth). A request costing more than the whole burst goes through on a full bucket,
    so a large batch is slowed down, never refused for ever."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.rate = rate
        self.burst = float(rate if burst is None else burst)
        self.clock = clock or time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, caller: str, cost: float = 1.0) -> float:
        """0 if CALLER may go ahead now (`cost` tokens are spent), else seconds until it may;
        always 0 when the rate is 0 (no limit)."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= cost or (cost > self.burst and tokens >= self.burst):
                self._buckets[caller] = (tokens - cost, now)
                return 0.0
            self._buckets[caller] = (tokens, now)
            return (min(cost, self.burst) - tokens) / self.rate
