"""API keys with roles, kept as SHA-256 hashes in the store's ``service.sqlite``.

A key is shown once, when it is made (``editscope keys add``); only its hash and its first
characters (to tell keys apart in ``keys list``) are stored. Keys are long random strings, so a
plain SHA-256 is enough to make a stolen file useless for signing in."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from editscope.service.database import ServiceDatabaseError, connect
from editscope.store.records import utc_now

ROLES: tuple[str, ...] = ("reader", "editor", "admin")  # each role may do what the one before may
KEY_PREFIX = "esk_"
ANONYMOUS = "anonymous"  # who a request is when the store has no keys (loopback only)


class KeyRingError(ValueError):
    """A key operation is refused (unknown role, duplicate or unknown name)."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without the key itself."""

    id: int
    name: str
    role: str
    prefix: str
    created_at: str
    revoked_at: str | None

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "role": self.role, "prefix": self.prefix,
                "created_at": self.created_at, "revoked_at": self.revoked_at}


def role_allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may."""
    return ROLES.index(role) >= ROLES.index(needed)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 100 or not name.isprintable():
        raise KeyRingError(f"a key name must be 1 to 100 printable characters, got {name!r}")
    if name == ANONYMOUS:
        raise KeyRingError(f"the key name {ANONYMOUS!r} is reserved")
    return name.strip()


class KeyRing:
    """The API keys of one store. Safe to use from several threads; another process (the CLI)
    may add or revoke keys while a server uses them: every lookup reads the file."""

    def __init__(self, store_directory: str | Path) -> None:
        self._conn = connect(store_directory)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def add(self, name: str, role: str) -> tuple[ApiKey, str]:
        """Make a key for ``name`` with ``role``; returns its record and the key (shown once)."""
        name = _check_name(name)
        if role not in ROLES:
            raise KeyRingError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = utc_now()
        try:
            with self._lock:
                cursor = self._conn.execute(
                    "INSERT INTO api_keys (name, role, sha256, prefix, created_at) VALUES (?,?,?,?,?)",
                    (name, role, hash_key(key), key[:10], now),
                )
        except sqlite3.IntegrityError:
            raise KeyRingError(f"an active key named {name!r} already exists (revoke it first)") from None
        except sqlite3.Error as error:
            raise ServiceDatabaseError(f"cannot add key {name!r}: {error}") from error
        return ApiKey(int(cursor.lastrowid), name, role, key[:10], now, None), key

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, name, role, prefix, created_at, revoked_at FROM api_keys" + where + " ORDER BY id"
            ).fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, name: str) -> ApiKey:
        """Revoke the active key named ``name`` (it stops working at once)."""
        now = utc_now()
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (now, name)
            )
        if cursor.rowcount != 1:
            raise KeyRingError(f"no active key named {name!r}")
        return next(k for k in self.list() if k.name == name and k.revoked_at == now)

    def any_added(self) -> bool:
        """Whether a key was ever added (revoked ones count: a store that had keys stays closed)."""
        with self._lock:
            return self._conn.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None

    def any_active(self) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1").fetchone() is not None

    def lookup(self, key: str) -> ApiKey | None:
        """The active key whose hash is ``key``'s, or ``None``."""
        with self._lock:
            row = self._conn.execute(
                "SELECT id, name, role, prefix, created_at, revoked_at FROM api_keys"
                " WHERE sha256 = ? AND revoked_at IS NULL", (hash_key(key),)
            ).fetchone()
        return ApiKey(*row) if row else None
