"""Customer data and secrets at the edges: hashed ids, redacted URLs, API keys.

Small helpers every process shares (producers, processors and sinks may all
import this module; it imports nothing of ours):

- `keyed_customer_hash(customer_id)`: what a log line, an audit line or an
  error message says instead of a customer id: HMAC-SHA256 (hex) under the
  deployment's secret `MOMENTS_ID_HASH_KEY`, so a hash cannot be reversed by
  hashing guessed ids (customer ids are short and guessable: a plain digest
  of one is found by enumeration in under a second). Logs, errors and metric
  labels never hold a customer id, free text or an address in clear.
- `printable(text)`: customer text as a terminal may show it (control and
  escape characters removed), for everything the CLI prints of it.
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
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

log = logging.getLogger(__name__)

#: What a masked secret looks like wherever one would have been printed.
MASK: Final = "**********"

_id_hash_key: bytes | None = None
_id_hash_source: Callable[[], str | None] | None = None
_id_hash_lock = threading.Lock()


def set_id_hash_key(key: str | bytes | None) -> None:
    """Set the key of `keyed_customer_hash` for this process (None: read it again from the
    settings on next use). Processes get it from `MOMENTS_ID_HASH_KEY`; tests set it here."""
    global _id_hash_key
    with _id_hash_lock:
        _id_hash_key = key.encode("utf-8") if isinstance(key, str) else key


def use_id_hash_key_source(source: Callable[[], str | None]) -> None:
    """Where `keyed_customer_hash` reads its key on first use: `common.settings` registers
    `MOMENTS_ID_HASH_KEY` here (this module imports nothing of ours)."""
    global _id_hash_source
    _id_hash_source = source


def _hash_key() -> bytes:
    global _id_hash_key
    with _id_hash_lock:
        if _id_hash_key is None:
            configured = _id_hash_source() if _id_hash_source is not None else None
            if configured:
                _id_hash_key = configured.encode("utf-8")
            else:
                # Still keyed (never reversible), but hashes only match within this process.
                log.warning(
                    "MOMENTS_ID_HASH_KEY is not set: customer ids in logs are hashed with a"
                    " key of this process only, so hashes differ between processes and restarts"
                )
                _id_hash_key = secrets.token_bytes(32)
        return _id_hash_key


def keyed_customer_hash(customer_id: str) -> str:
    """HMAC-SHA256 of a customer id under `MOMENTS_ID_HASH_KEY` (hex, 64 digits): how logs,
    audit lines and errors name a customer. The same id gives the same hash in every process
    sharing the key; without the key a hash cannot be tied to an id."""
    return hmac.new(_hash_key(), customer_id.encode("utf-8"), hashlib.sha256).hexdigest()


# C0 and C1 controls (ESC, CSI, BEL, backspace, carriage return...), DEL, and the Unicode
# format characters that reorder or hide text on a terminal (bidi overrides, zero widths).
_UNPRINTABLE: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)


def printable(text: str, *, newlines: bool = False) -> str:
    """TEXT without control characters, so printing it cannot move the cursor, rewrite the
    screen, set the window title or hide text; tabs (and newlines if `newlines`) become
    spaces unless kept."""
    cleaned = _UNPRINTABLE.sub("", text)
    if not newlines:
        cleaned = cleaned.replace("\n", " ").replace("\t", " ")
    return cleaned


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

    def waiting(self, caller: str, cost: float = 1.0) -> float:
        """Seconds until CALLER could spend `cost` tokens (0: now); spends nothing."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            return max(0.0, (min(cost, self.burst) - tokens) / self.rate)
