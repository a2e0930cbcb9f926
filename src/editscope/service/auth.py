"""Who a request is, and whether they may do what they ask: API keys (``Authorization: Bearer
<key>``) with roles, and a per-key rate limit.

With no active key in the store the service is open (every request is ``anonymous`` with the
admin role); ``serve`` then binds to loopback only. The web page's GET requests (the page and
its thumbnails) may carry the key in the ``editscope_key`` cookie instead, which the page sets;
writes always need the header, so another site cannot make a browser write."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

from editscope.service.keys import ANONYMOUS, KeyRing, role_allows

COOKIE = "editscope_key"


class AuthError(PermissionError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <key>'", 401)
    return token.strip()


def authenticate(keys: KeyRing, header: str | None, cookie: str | None, needed: str, allow_cookie: bool) -> Principal:
    """The principal of a request that needs role ``needed``: ``401`` without a valid key,
    ``403`` with a key whose role is weaker. Only a store that never had a key is open: revoking
    its last key closes a running server until a new key is added."""
    if not keys.any_added():
        return Principal(ANONYMOUS, "admin")
    token = bearer_token(header)
    if token is None and allow_cookie and cookie:
        token = cookie
    if token is None:
        raise AuthError("an API key is needed: send 'Authorization: Bearer <key>'", 401)
    key = keys.lookup(token)
    if key is None:
        raise AuthError("unknown or revoked API key", 401)
    if not role_allows(key.role, needed):
        raise AuthError(f"key {key.name!r} has role {key.role!r}; this needs {needed!r}", 403)
    return Principal(key.name, key.role)


class RateLimiter:
    """At most ``per_minute`` requests per caller in any 60 seconds (``0``: no limit)."""

    def __init__(self, per_minute: int, window_s: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._seen: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, caller: str) -> float | None:
        """``None`` when ``caller`` may go on (the request is counted), else the seconds until
        it may try again."""
        if self.per_minute == 0:
            return None
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(caller, collections.deque())
            while seen and seen[0] <= now - self.window_s:
                seen.popleft()
            if len(seen) >= self.per_minute:
                return max(0.0, seen[0] + self.window_s - now)
            seen.append(now)
        return None
