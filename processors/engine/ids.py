"""Ids the engine derives: action, decision and other ids hashed from their parts, and the
deterministic control group. Same parts, same id, on every machine; no random numbers.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from typing import Any, Final


def _plain_sha256() -> Callable[[bytes], Any]:
    """CPython's built-in SHA-256 (same digest as hashlib's): for the short texts of ids it
    costs about half of OpenSSL's, whose per-call context setup dominates."""
    for name in ("_sha2", "_sha256"):  # Python >= 3.12, <= 3.11
        try:
            candidate = importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            continue
        if candidate(b"moments").digest() == hashlib.sha256(b"moments").digest():
            return candidate  # type: ignore[no-any-return]
    return hashlib.sha256


#: SHA-256 of bytes (`.digest()`), the fastest implementation at hand.
sha256: Final = _plain_sha256()


def hex_id(text: str) -> str:
    """A 128-bit hex id of `text`: the first 32 hex digits of its SHA-256."""
    return sha256(text.encode()).digest()[:16].hex()


def stable_id(*parts: str) -> str:
    """A 128-bit hex id from the parts (same parts -> same id, on every machine)."""
    return hex_id("\x1f".join(parts))


def in_holdout(customer_id: str, rule_id: str, percent: float) -> bool:
    """The deterministic control group: hash(customer, rule) mapped to [0, 100) < percent."""
    if percent <= 0:
        return False
    digest = hashlib.sha256(f"{customer_id}\x1f{rule_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100.0 / 2**64 < percent
