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
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from editscope.store import integrity
from editscope.store import journal_schema as schema

# The journal's records, re-exported: callers import them from here or from records.
from editscope.store.records import (  # noqa: F401
    APPLIED, AnchorRecord, EVENT_KINDS, EditDraft, EditRecord, EventRecord, PENDING,
    REJECTED, REVERTED, ROLLED_BACK, STATUSES, SnapshotRecord, edit_record, utc_now,
)

log = logging.getLogger(__name__)


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


def _store_error(message: str) -> Exception:
    # Imported here: editscope.store.layout imports (through export) this module.
    from editscope.store.layout import StoreError

    return StoreError(message)


_PREVIOUS_CHAIN = "(SELECT p.chain FROM {table} p WHERE p.id < {alias}.id ORDER BY p.id DESC LIMIT 1)"


class SQLiteJournal(Journal):
    """The journal in one SQLite file (WAL mode, synchronous=FULL: a committed row survives a
    killed process), every row integrity-checked (``editscope.store.integrity``).

    Only ``create=True`` (used by ``EditStore.init``) makes a new file; otherwise the file must
    exist and be an editscope journal, else a ``StoreError`` names it (a missing journal is never
    silently replaced by an empty one). ``read_only``: ``True`` opens it read-only, ``False``
    for writing, ``None`` (the default) read-only exactly when the file or its directory is not
    writable. On a read-only journal, reads work and every write is a ``StoreError`` naming the
    file. Every row read is checked against its checksum and its link to the row before it; a
    row that fails is a ``StoreError`` naming it (``verify`` checks them all at once). A journal
    written before the chain existed gets it on its first open for writing (see
    ``journal_schema``); opened read-only it is read unchecked (``chained`` is false)."""

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
            self._conn = schema.connect(self.path, create=create, read_only=self.read_only)
            self.chained = schema.has_chain(self._conn)
            if not self.chained and not self.read_only:
                schema.add_chain(self._conn, self.path)
                self.chained = True
            if not self.read_only and not schema.has_scoping(self._conn):
                schema.add_scoping(self._conn, self.path)
            self._scoping = "e.scoping" if schema.has_scoping(self._conn) else "NULL"  # NULL: an older journal
        except sqlite3.DatabaseError as error:
            raise _store_error(
                f"journal {self.path} cannot be read: {error} (the file is damaged or not an editscope journal)"
            ) from error
        if not self.chained:
            log.warning("journal %s has no integrity chain (written by an older editscope) and is open "
                        "read-only: its rows are read unchecked until it is opened for writing", self.path)

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

    # -- integrity ---------------------------------------------------------------------------
    def bad_rows(self) -> list[str]:
        """Every row that fails its integrity check, named (``edit 7``, ``snapshot 'x' (row
        2)``, ``event 4``); empty on a journal without the chain."""
        if not self.chained:
            return []
        with self._lock, self._guard(), self.read_view():
            return [integrity.row_label(table, row_id, name)
                    for table in ("edits", "snapshots", "events")
                    for row_id, name in schema.bad_rows(self._conn, table)]

    @contextlib.contextmanager
    def unchecked(self) -> Iterator[None]:
        """Reads inside skip the per-row checks (for ``editscope check``, which lists what else
        is wrong in a journal that has bad rows)."""
        chained, self.chained = self.chained, False
        try:
            yield
        finally:
            self.chained = chained

    def verify(self) -> None:
        """Check every row; the first that fails is a ``StoreError`` naming it."""
        bad = self.bad_rows()
        if bad:
            raise _store_error(integrity.bad_row_message(self.path, bad[0]))

    def _check(self, table: str, row_id: int, previous: str | None, values: Sequence[Any],
               tags: Sequence[str] = (), mutable: Sequence[Any] = (), chain: str | None = None,
               checksum: str | None = None, name: str | None = None) -> None:
        if not self.chained:
            return
        ok = chain == integrity.chain_link(table, previous or integrity.GENESIS, values, tags)
        if ok and table == "edits":
            ok = checksum == integrity.edit_checksum(chain, mutable)
        if not ok:
            raise _store_error(integrity.bad_row_message(self.path, integrity.row_label(table, row_id, name)))

    def _link(self, table: str, row_id: int, values: Sequence[Any], tags: Sequence[str] = ()) -> str:
        """Set the chain of the newest row of ``table`` (inside the caller's transaction)."""
        previous = self._conn.execute(
            f"SELECT chain FROM {table} WHERE id < ? ORDER BY id DESC LIMIT 1", (row_id,)).fetchone()
        chain = integrity.chain_link(table, previous[0] if previous else integrity.GENESIS, values, tags)
        self._conn.execute(f"UPDATE {table} SET chain = ? WHERE id = ?", (chain, row_id))
        return chain

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

    @contextlib.contextmanager
    def read_view(self) -> Iterator[None]:
        """Reads inside see one committed state of the journal (a read transaction: a writer in
        another process may commit meanwhile, unseen until the view ends)."""
        with self._lock, self._guard():
            outer = self._depth == 0
            if outer:
                self._conn.execute("BEGIN")
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if outer:
                    self._conn.execute("COMMIT")

    # -- edits -------------------------------------------------------------------------------
    def add_edit(self, draft: EditDraft) -> int:
        now = utc_now()
        values = [now, draft.prompt, draft.target, draft.scope, draft.image_sha256,
                  json.dumps(list(draft.rephrases)), json.dumps([a.__dict__ for a in draft.anchors]),
                  draft.config_hash, draft.scoping()]
        with self.transaction():
            cursor = self._conn.execute(
                "INSERT INTO edits (created_at, prompt, target, scope, image_sha256,"
                " rephrases, anchors, config_hash, scoping, updated_at, status) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (*values, now, PENDING),
            )
            edit_id = int(cursor.lastrowid)
            self._conn.executemany(
                "INSERT OR IGNORE INTO edit_tags (edit_id, tag) VALUES (?, ?)",
                [(edit_id, tag) for tag in draft.tags],
            )
            chain = self._link("edits", edit_id, (edit_id, *values), draft.tags)
            self._conn.execute("UPDATE edits SET checksum = ? WHERE id = ?",
                               (integrity.edit_checksum(chain, (PENDING, now, None, None)), edit_id))
        return edit_id

    def set_status(
        self,
        edit_ids: Sequence[int],
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Change the status of ``edit_ids`` (and store ``result`` / ``error``); each row is
        checked before its checksum is rewritten."""
        if status not in STATUSES:
            raise ValueError(f"unknown edit status {status!r}; expected one of {STATUSES}")
        now = utc_now()
        with self.transaction():
            for edit_id in edit_ids:
                if self.get_edit(edit_id) is None:  # checked, so that a changed row is never re-sealed
                    raise KeyError(f"no edit with id {edit_id} in journal {self.path}")
                chain, old_result, old_error = self._conn.execute(
                    "SELECT chain, result, error FROM edits WHERE id = ?", (edit_id,)).fetchone()
                new_result = json.dumps(result) if result is not None else old_result
                new_error = error if error is not None else old_error
                checksum = integrity.edit_checksum(chain, (status, now, new_result, new_error))
                self._conn.execute(
                    "UPDATE edits SET status = ?, updated_at = ?, result = ?, error = ?, checksum = ? WHERE id = ?",
                    (status, now, new_result, new_error, checksum, edit_id),
                )

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
        chained = ", e.chain, e.checksum, " + _PREVIOUS_CHAIN.format(table="edits", alias="e") if self.chained else ""
        with self._lock, self._guard(), self.read_view():
            rows = self._conn.execute(
                "SELECT e.id, e.created_at, e.updated_at, e.prompt, e.target, e.scope,"
                " e.image_sha256, e.rephrases, e.anchors, e.status, e.result, e.error,"
                " e.config_hash, " + self._scoping + chained + " FROM edits e " + where + " ORDER BY e.id",
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
        for row in rows:
            if self.chained:
                self._check("edits", row[0], row[16], (row[0], row[1], *row[3:9], row[12], row[13]),
                            tags.get(row[0], ()), (row[9], row[2], row[10], row[11]), row[14], row[15])
        try:
            return [edit_record(row, tags.get(row[0], ())) for row in rows]
        except (ValueError, TypeError) as error:  # only on a journal read unchecked
            raise _store_error(f"journal {self.path}: an edit row cannot be read: {error}") from error

    # -- snapshots ---------------------------------------------------------------------------
    def add_snapshot(
        self, name: str, trigger: str, file: str, sha256: str, lineage: Sequence[int]
    ) -> SnapshotRecord:
        now = utc_now()
        stored_lineage = json.dumps([int(i) for i in lineage])
        with self.transaction():
            cursor = self._conn.execute(
                "INSERT INTO snapshots (created_at, name, trigger, file, sha256, lineage)"
                " VALUES (?,?,?,?,?,?)",
                (now, name, trigger, file, sha256, stored_lineage),
            )
            row_id = int(cursor.lastrowid)
            self._link("snapshots", row_id, (row_id, now, name, trigger, file, sha256, stored_lineage))
        return SnapshotRecord(row_id, now, name, trigger, file, sha256, tuple(lineage))

    def snapshots(self) -> list[SnapshotRecord]:
        chained = ", chain, " + _PREVIOUS_CHAIN.format(table="snapshots", alias="s") if self.chained else ""
        with self._lock, self._guard():
            rows = self._conn.execute(
                "SELECT id, created_at, name, trigger, file, sha256, lineage" + chained
                + " FROM snapshots s ORDER BY id"
            ).fetchall()
        for row in rows:
            if self.chained:
                self._check("snapshots", row[0], row[8], row[:7], chain=row[7], name=row[2])
        return [
            SnapshotRecord(r[0], r[1], r[2], r[3], r[4], r[5], tuple(json.loads(r[6]))) for r in rows
        ]

    # -- events ------------------------------------------------------------------------------
    def add_event(self, kind: str, payload: dict[str, Any]) -> EventRecord:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {EVENT_KINDS}")
        now = utc_now()
        stored = json.dumps(payload)
        with self.transaction():
            cursor = self._conn.execute(
                "INSERT INTO events (created_at, kind, payload) VALUES (?,?,?)", (now, kind, stored),
            )
            row_id = int(cursor.lastrowid)
            self._link("events", row_id, (row_id, now, kind, stored))
        return EventRecord(row_id, now, kind, payload)

    def events(self, kind: str | None = None) -> list[EventRecord]:
        chained = ", v.chain, " + _PREVIOUS_CHAIN.format(table="events", alias="v") if self.chained else ""
        query = "SELECT v.id, v.created_at, v.kind, v.payload" + chained + " FROM events v"
        values: tuple[Any, ...] = ()
        if kind is not None:
            query += " WHERE v.kind = ?"
            values = (kind,)
        with self._lock, self._guard():
            rows = self._conn.execute(query + " ORDER BY v.id", values).fetchall()
        for row in rows:
            if self.chained:
                self._check("events", row[0], row[5], row[:4], chain=row[4])
        return [EventRecord(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

