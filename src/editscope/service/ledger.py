"""The service's ledger of acknowledged writes, in ``service.sqlite``.

An edit is acknowledged (``202``) only once two rows are committed, in this order: the store
journal's pending edit, then the ledger's row naming it (with the API key that made it and the
client's ``Idempotency-Key``). So on restart a pending edit with a ledger row was acknowledged
and must be applied; one without was never acknowledged (the process died between the two
commits) and is abandoned, and a client's retry with the same idempotency key makes it anew.
Rollbacks, reverts, snapshots, audits and key changes get a row after they are done."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from editscope.service.database import connect
from editscope.store.records import utc_now


@dataclass(frozen=True)
class WriteRow:
    id: int
    created_at: str
    key_name: str
    action: str
    edit_id: int | None
    idempotency_key: str | None
    body_sha256: str | None
    detail: dict[str, Any]


class IdempotencyConflict(ValueError):
    """An idempotency key reused with a different request body."""


class Ledger:
    """Thread-safe access to the ``writes`` table."""

    def __init__(self, store_directory: str | Path) -> None:
        self._conn = connect(store_directory)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def record(self, key_name: str, action: str, *, edit_id: int | None = None,
               idempotency_key: str | None = None, body_sha256: str | None = None,
               detail: dict[str, Any] | None = None) -> WriteRow:
        now = utc_now()
        payload = detail or {}
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO writes (created_at, key_name, action, edit_id, idempotency_key, body_sha256, detail)"
                " VALUES (?,?,?,?,?,?,?)",
                (now, key_name, action, edit_id, idempotency_key, body_sha256, json.dumps(payload)),
            )
        return WriteRow(int(cursor.lastrowid), now, key_name, action, edit_id, idempotency_key, body_sha256, payload)

    def by_idempotency_key(self, key_name: str, idempotency_key: str, body_sha256: str) -> WriteRow | None:
        """The earlier write of ``key_name`` with ``idempotency_key``; an ``IdempotencyConflict``
        when its body differs from ``body_sha256``."""
        row = self._one("WHERE key_name = ? AND idempotency_key = ?", (key_name, idempotency_key))
        if row is not None and row.body_sha256 != body_sha256:
            raise IdempotencyConflict(
                f"Idempotency-Key {idempotency_key!r} was already used by key {key_name!r} for a different request"
                f" (edit {row.edit_id})"
            )
        return row

    def for_edit(self, edit_id: int) -> WriteRow | None:
        return self._one("WHERE edit_id = ?", (int(edit_id),))

    def acknowledged_edits(self) -> set[int]:
        with self._lock:
            return {r[0] for r in self._conn.execute("SELECT edit_id FROM writes WHERE edit_id IS NOT NULL")}

    def authors(self, edit_ids: list[int]) -> dict[int, str]:
        """Which key submitted each of ``edit_ids`` (those made through the service)."""
        if not edit_ids:
            return {}
        marks = ",".join("?" * len(edit_ids))
        with self._lock:
            rows = self._conn.execute(f"SELECT edit_id, key_name FROM writes WHERE edit_id IN ({marks})", edit_ids)
            return {int(e): k for e, k in rows}

    def rows(self, action: str | None = None) -> list[WriteRow]:
        return self._many("WHERE action = ?" if action else "", (action,) if action else ())

    def _one(self, where: str, values: tuple[Any, ...]) -> WriteRow | None:
        found = self._many(where, values)
        return found[0] if found else None

    def _many(self, where: str, values: tuple[Any, ...]) -> list[WriteRow]:
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT id, created_at, key_name, action, edit_id, idempotency_key, body_sha256, detail"
                    f" FROM writes {where} ORDER BY id", values
                ).fetchall()
            except sqlite3.Error as error:
                raise RuntimeError(f"service ledger: {error}") from error
        return [WriteRow(*r[:7], json.loads(r[7])) for r in rows]
