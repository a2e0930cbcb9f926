"""The service's own SQLite file in the store directory, ``service.sqlite``: API keys (their
hashes) and the ledger of acknowledged writes. The edit journal stays the store's
(``journal.sqlite``); this file never holds an edit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from editscope.store.layout import read_manifest

SERVICE_DB = "service.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS writes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    key_name TEXT NOT NULL,
    action TEXT NOT NULL,
    edit_id INTEGER UNIQUE,
    idempotency_key TEXT,
    body_sha256 TEXT,
    detail TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS writes_idempotency ON writes(key_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
"""


class ServiceDatabaseError(RuntimeError):
    """The service file cannot be opened or written; the message names it."""


def connect(store_directory: str | Path) -> sqlite3.Connection:
    """A connection to the store's ``service.sqlite`` (created with its tables on first use).
    ``store_directory`` must be an editscope store. Committed rows survive a killed process
    (``synchronous=FULL``); another process waits up to 10 s for a write lock."""
    directory = Path(store_directory)
    read_manifest(directory)  # a StoreError naming the directory when it is not a store
    path = directory / SERVICE_DB
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
    except sqlite3.Error as error:
        raise ServiceDatabaseError(f"service file {path} cannot be used: {error}") from error
    return conn
