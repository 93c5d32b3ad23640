"""Who is at the desk: desk keys, signed session cookies and CSRF tokens (docs/design.md 13).

A desk key is `name=key` (`MOMENTS_DESK_KEYS`): the name is the agent, shown on
the page and in audit lines; a key without a name goes by `common.privacy.key_name`.
Signing in with a key gives a session cookie `agent|expiry|nonce|signature`, the
signature an HMAC of the rest under that agent's own key: removing a key ends its
sessions, and every replica behind one Service accepts the cookie. Each form
carries a CSRF token, an HMAC of the session's nonce; the sign-in form (no
session yet) carries one bound to a pre-session cookie. Never logs or shows a key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from common.privacy import key_name

#: The session cookie and the pre-session cookie of the sign-in form.
SESSION_COOKIE: Final = "moments_desk"
SIGNIN_COOKIE: Final = "moments_desk_signin"
#: How long a session lasts after sign-in, in seconds.
SESSION_TTL_S: Final = 8 * 3600
#: Longest agent name accepted (it travels as `attributes.owner`).
MAX_AGENT_LENGTH: Final = 64


class DeskKeyError(ValueError):
    """A desk key that cannot be used (blank name or key, a name given twice)."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in agent: name, expiry (epoch seconds) and the nonce its CSRF tokens use."""

    agent: str
    expires_at: int
    nonce: str


def parse_desk_keys(entries: Iterable[str]) -> dict[str, bytes]:
    """`{agent: key}` from `name=key` entries (a bare key goes by `key_name`)."""
    keys: dict[str, bytes] = {}
    for position, entry in enumerate(entries, start=1):
        name, sep, key = entry.partition("=")
        if not sep:
            name, key = key_name(entry.encode("utf-8")), entry
        name = name.strip()
        if not name or not key:
            raise DeskKeyError(f"MOMENTS_DESK_KEYS entry {position}: give it as name=key")
        if len(name) > MAX_AGENT_LENGTH or not name.isprintable() or "|" in name:
            raise DeskKeyError(
                f"MOMENTS_DESK_KEYS entry {position}: the name must be 1 to {MAX_AGENT_LENGTH}"
                " printable characters without '|'"
            )
        if name in keys:
            raise DeskKeyError(f"MOMENTS_DESK_KEYS entry {position}: agent {name!r} given twice")
        keys[name] = key.encode("utf-8")
    return keys


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class DeskAuth:
    """Keys, sessions and CSRF tokens of one desk. Without keys (loopback only) any agent
    name signs in, and sessions are signed with a secret of this process alone."""

    def __init__(self, keys: dict[str, bytes], *, ttl_s: int = SESSION_TTL_S) -> None:
        self._keys = dict(keys)
        self.ttl_s = ttl_s
        self.open = not keys
        self._process_secret = secrets.token_bytes(32)
        # The secret of the sign-in form's token: from every key, so replicas agree.
        self._signin_secret = (
            hashlib.sha256(b"moments-desk-signin\0" + b"\0".join(sorted(keys.values()))).digest()
            if keys
            else self._process_secret
        )

    def __repr__(self) -> str:
        return f"DeskAuth(agents={sorted(self._keys)})"

    def agent_of_key(self, given: str) -> str | None:
        """The agent whose key is GIVEN (compared in constant time with every key), or None."""
        candidate = given.encode("utf-8")
        found: str | None = None
        for name, key in self._keys.items():
            if hmac.compare_digest(candidate, key) and found is None:
                found = name
        return found

    def _secret(self, agent: str) -> bytes | None:
        return self._process_secret if self.open else self._keys.get(agent)

    def _sign(self, secret: bytes, message: str) -> str:
        return _b64(hmac.new(secret, message.encode("utf-8"), hashlib.sha256).digest())

    def issue(self, agent: str, now_s: float) -> str:
        """A session cookie value for AGENT, valid `ttl_s` from NOW_S."""
        secret = self._secret(agent)
        if secret is None:
            raise KeyError("no such agent")
        body = f"{_b64(agent.encode('utf-8'))}|{int(now_s) + self.ttl_s}|{secrets.token_hex(16)}"
        return f"{body}|{self._sign(secret, body)}"

    def session(self, cookie: str | None, now_s: float) -> Session | str | None:
        """The session of a cookie; None without a (valid) one; "expired" for one that was
        valid but has run out (the page says so)."""
        if not cookie:
            return None
        parts = cookie.split("|")
        if len(parts) != 4:
            return None
        agent_part, expiry, nonce, signature = parts
        try:
            agent = _unb64(agent_part).decode("utf-8")
            expires_at = int(expiry)
        except (ValueError, UnicodeDecodeError):
            return None
        secret = self._secret(agent)
        if secret is None:
            return None
        body = f"{agent_part}|{expiry}|{nonce}"
        if not hmac.compare_digest(self._sign(secret, body), signature):
            return None
        if expires_at <= now_s:
            return "expired"
        return Session(agent, expires_at, nonce)

    def csrf_token(self, session: Session) -> str:
        """The token every form of SESSION carries."""
        secret = self._secret(session.agent) or b""
        return self._sign(secret, f"csrf|{session.nonce}")

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf_token(session), given or "")

    @staticmethod
    def signin_nonce() -> str:
        return secrets.token_hex(16)

    def signin_token(self, nonce: str) -> str:
        """The sign-in form's token, bound to the pre-session cookie's NONCE."""
        return self._sign(self._signin_secret, f"signin|{nonce}")

    def signin_ok(self, nonce: str | None, given: str | None) -> bool:
        if not nonce or not given:
            return False
        return hmac.compare_digest(self.signin_token(nonce), given)
