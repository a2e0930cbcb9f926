"""The edit journal: one row per edit request, plus rows for snapshots and for the store's own
operations (rollbacks, reverts, audits, recoveries, exports).

Storage sits behind the small ``Journal`` interface so that another database can be added
later; ``SQLiteJournal`` is the implementation (standard-library ``sqlite3``, WAL mode). Nothing
is ever deleted: an edit's row only changes status (pending -> applied/rejected, applied ->
reverted/rolled_back, and back to applied when a rollback restores a state that contained it).
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import sqlite3
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, Sequence

# The journal's records, re-exported: callers import them from here or from records.
from editscope.store.records import (  # noqa: F401
    APPLIED, AnchorRecord, EVENT_KINDS, EditDraft, EditRecord, EventRecord, PENDING,
    REJECTED, REVERTED, ROLLED_BACK, STATUSES, SnapshotRecord, utc_now,
)


class Journal(abc.ABC):
    """Storage interface of the journal."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Group several writes so that they are committed together or not at all."""

    @abc.abstractmethod
    def add_edit(self, draft: EditDraft) -> int:
        """Insert a pending edit and return its id."""

    @abc.abstractmethod
    def set_status(
        self,
        edit_ids: Sequence[int],
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None: ...

    @abc.abstractmethod
    def get_edit(self, edit_id: int) -> EditRecord | None: ...

    @abc.abstractmethod
    def edits(self, *, tag: str | None = None, status: str | None = None) -> list[EditRecord]:
        """Edits in id order, optionally only those with ``tag`` and/or ``status``."""

    @abc.abstractmethod
    def add_snapshot(self, name: str, trigger: str, file: str, sha256: str, lineage: Sequence[int]) -> SnapshotRecord: ...

    @abc.abstractmethod
    def snapshots(self) -> list[SnapshotRecord]: ...

    @abc.abstractmethod
    def add_event(self, kind: str, payload: dict[str, Any]) -> EventRecord: ...

    @abc.abstractmethod
    def events(self, kind: str | None = None) -> list[EventRecord]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def get_snapshot(self, name: str) -> SnapshotRecord | None:
        for snap in self.snapshots():
            if snap.name == name:
                return snap
        return None

    def applied_ids(self) -> list[int]:
        """The edits currently in effect, in the order they are applied."""
        return [record.id for record in self.edits(status=APPLIED)]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS edits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    prompt TEXT NOT NULL,
    target TEXT NOT NULL,
    scope TEXT NOT NULL,
    image_sha256 TEXT,
    rephrases TEXT NOT NULL,
    anchors TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    config_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS edit_tags (
    edit_id INTEGER NOT NULL REFERENCES edits(id),
    tag TEXT NOT NULL,
    PRIMARY KEY (edit_id, tag)
);
CREATE INDEX IF NOT EXISTS edit_tags_by_tag ON edit_tags(tag);
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    trigger TEXT NOT NULL,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    lineage TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
);
"""


_TABLES = ("edits", "edit_tags", "snapshots", "events")


def _store_error(message: str) -> Exception:
    # Imported here: editscope.store.layout imports (through export) this module.
    from editscope.store.layout import StoreError

    return StoreError(message)


class SQLiteJournal(Journal):
    """The journal in one SQLite file (WAL mode, synchronous=FULL: a committed row survives a
    killed process).

    Only ``create=True`` (used by ``EditStore.init``) makes a new file; otherwise the file must
    exist and be an editscope journal, else a ``StoreError`` names it (a missing journal is never
    silently replaced by an empty one). ``read_only``: ``True`` opens it read-only, ``False``
    for writing, ``None`` (the default) read-only exactly when the file or its directory is not
    writable. On a read-only journal, reads work and every write is a ``StoreError`` naming the
    file."""

    def __init__(self, path: str | Path, *, create: bool = False, read_only: bool | None = None) -> None:
        self.path = Path(path)
        if create:
            read_only = False
        elif not self.path.is_file():
            raise _store_error(
                f"journal {self.path} is missing: the store's history is gone (restore the file from a"
                " backup; nothing was created in its place)"
            )
        elif read_only is None:
            read_only = not (os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK))
        self.read_only = bool(read_only)
        self._lock = threading.RLock()
        self._depth = 0
        try:
            self._conn = self._connect(create)
        except sqlite3.DatabaseError as error:
            raise _store_error(
                f"journal {self.path} cannot be read: {error} (the file is damaged or not an editscope journal)"
            ) from error

    def _connect(self, create: bool) -> sqlite3.Connection:
        uri = "file:" + urllib.parse.quote(str(self.path.absolute()))
        if create:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        else:
            conn = sqlite3.connect(uri + ("?mode=ro" if self.read_only else "?mode=rw"), uri=True,
                                   isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            except sqlite3.OperationalError:
                if not self.read_only:
                    raise
                # A WAL database in a directory we cannot write: SQLite cannot create the shared
                # memory file. With no write-ahead log holding rows, the main file is the whole
                # committed state, and it can be read as immutable.
                wal = self.path.with_name(self.path.name + "-wal")
                if wal.exists() and wal.stat().st_size > 0:
                    raise
                conn.close()
                conn = sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, isolation_level=None,
                                       check_same_thread=False)
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not create:
                missing = [t for t in _TABLES if t not in tables]
                if missing:  # checked before anything (even the WAL mode) is written to the file
                    raise sqlite3.DatabaseError(f"it has no {', '.join(missing)} table")
            if not self.read_only:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            if create:
                self._conn = conn
                with self.transaction():
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """SQLite errors as ``StoreError`` naming the journal file."""
        try:
            yield
        except sqlite3.IntegrityError:
            raise  # a constraint of the schema, not a fault of the file
        except sqlite3.OperationalError as error:
            if "readonly" in str(error) or "read-only" in str(error):
                raise _store_error(f"journal {self.path} is read-only: cannot write to it ({error})") from error
            raise _store_error(f"journal {self.path}: {error}") from error
        except sqlite3.DatabaseError as error:
            raise _store_error(
                f"journal {self.path} cannot be read: {error} (the file is damaged or not an editscope journal)"
            ) from error

    # -- transactions ------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self.read_only:
            raise _store_error(f"journal {self.path} is read-only: this operation writes to it")
        with self._lock, self._guard():
            outer = self._depth == 0
            if outer:
                self._conn.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer:
                    self._conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._conn.execute("COMMIT")

    # -- edits -------------------------------------------------------------------------------
    def add_edit(self, draft: EditDraft) -> int:
        now = utc_now()
        with self.transaction():
            cursor = self._conn.execute(
                "INSERT INTO edits (created_at, updated_at, prompt, target, scope, image_sha256,"
                " rephrases, anchors, status, config_hash) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    now,
                    now,
                    draft.prompt,
                    draft.target,
                    draft.scope,
                    draft.image_sha256,
                    json.dumps(list(draft.rephrases)),
                    json.dumps([a.__dict__ for a in draft.anchors]),
                    PENDING,
                    draft.config_hash,
                ),
            )
            edit_id = int(cursor.lastrowid)
            self._conn.executemany(
                "INSERT OR IGNORE INTO edit_tags (edit_id, tag) VALUES (?, ?)",
                [(edit_id, tag) for tag in draft.tags],
            )
        return edit_id

    def set_status(
        self,
        edit_ids: Sequence[int],
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown edit status {status!r}; expected one of {STATUSES}")
        now = utc_now()
        with self.transaction():
            for edit_id in edit_ids:
                assignments = ["status = ?", "updated_at = ?"]
                values: list[Any] = [status, now]
                if result is not None:
                    assignments.append("result = ?")
                    values.append(json.dumps(result))
                if error is not None:
                    assignments.append("error = ?")
                    values.append(error)
                cursor = self._conn.execute(
                    f"UPDATE edits SET {', '.join(assignments)} WHERE id = ?", (*values, edit_id)
                )
                if cursor.rowcount != 1:
                    raise KeyError(f"no edit with id {edit_id} in journal {self.path}")

    def get_edit(self, edit_id: int) -> EditRecord | None:
        rows = self._select_edits("WHERE e.id = ?", (int(edit_id),))
        return rows[0] if rows else None

    def edits(self, *, tag: str | None = None, status: str | None = None) -> list[EditRecord]:
        clauses, values = [], []
        if tag is not None:
            clauses.append("e.id IN (SELECT edit_id FROM edit_tags WHERE tag = ?)")
            values.append(tag)
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"unknown edit status {status!r}; expected one of {STATUSES}")
            clauses.append("e.status = ?")
            values.append(status)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return self._select_edits(where, tuple(values))

    def _select_edits(self, where: str, values: tuple[Any, ...]) -> list[EditRecord]:
        with self._lock, self._guard():
            rows = self._conn.execute(
                "SELECT e.id, e.created_at, e.updated_at, e.prompt, e.target, e.scope,"
                " e.image_sha256, e.rephrases, e.anchors, e.status, e.result, e.error,"
                " e.config_hash FROM edits e " + where + " ORDER BY e.id",
                values,
            ).fetchall()
            tags: dict[int, list[str]] = {}
            for edit_id, tag in self._conn.execute(
                "SELECT edit_id, tag FROM edit_tags WHERE edit_id IN (SELECT e.id FROM edits e "
                + where
                + ") ORDER BY edit_id, tag",
                values,
            ):
                tags.setdefault(edit_id, []).append(tag)
        return [
            EditRecord(
                id=row[0],
                created_at=row[1],
                updated_at=row[2],
                prompt=row[3],
                target=row[4],
                scope=row[5],
                image_sha256=row[6],
                tags=tuple(tags.get(row[0], ())),
                rephrases=tuple(json.loads(row[7])),
                anchors=tuple(AnchorRecord(**a) for a in json.loads(row[8])),
                status=row[9],
                result=json.loads(row[10]) if row[10] is not None else None,
                error=row[11],
                config_hash=row[12],
            )
            for row in rows
        ]

    # -- snapshots ---------------------------------------------------------------------------
    def add_snapshot(
        self, name: str, trigger: str, file: str, sha256: str, lineage: Sequence[int]
    ) -> SnapshotRecord:
        now = utc_now()
        with self.transaction():
            cursor = self._conn.execute(
                "INSERT INTO snapshots (created_at, name, trigger, file, sha256, lineage)"
                " VALUES (?,?,?,?,?,?)",
                (now, name, trigger, file, sha256, json.dumps([int(i) for i in lineage])),
            )
        return SnapshotRecord(int(cursor.lastrowid), now, name, trigger, file, sha256, tuple(lineage))

    def snapshots(self) -> list[SnapshotRecord]:
        with self._lock, self._guard():
            rows = self._conn.execute(
                "SELECT id, created_at, name, trigger, file, sha256, lineage FROM snapshots ORDER BY id"
            ).fetchall()
        return [
            SnapshotRecord(r[0], r[1], r[2], r[3], r[4], r[5], tuple(json.loads(r[6]))) for r in rows
        ]

    # -- events ------------------------------------------------------------------------------
    def add_event(self, kind: str, payload: dict[str, Any]) -> EventRecord:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {EVENT_KINDS}")
        now = utc_now()
        with self.transaction():
            cursor = self._conn.execute(
                "INSERT INTO events (created_at, kind, payload) VALUES (?,?,?)",
                (now, kind, json.dumps(payload)),
            )
        return EventRecord(int(cursor.lastrowid), now, kind, payload)

    def events(self, kind: str | None = None) -> list[EventRecord]:
        query = "SELECT id, created_at, kind, payload FROM events"
        values: tuple[Any, ...] = ()
        if kind is not None:
            query += " WHERE kind = ?"
            values = (kind,)
        with self._lock, self._guard():
            rows = self._conn.execute(query + " ORDER BY id", values).fetchall()
        return [EventRecord(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
