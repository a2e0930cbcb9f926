"""The journal file's schema: its tables, opening the SQLite file, adding the integrity chain to
a journal written before it existed, and checking a whole table's chain.

A journal created without the chain (by an editscope older than the ``chain`` columns) gets it
on its first open for writing: the columns are added and every existing row is sealed as it is
then, in one transaction, and a ``migrate`` event records it. Rows changed before that point
cannot be told apart from good ones. Opened read-only, such a journal is read without checks
(``chained`` is false, and ``editscope check`` reports it).

A journal written before edits had a ``scoping`` column (the rule that decided an edit's scope
and its scope examples) gets it, empty (NULL) for the rows already there, on its first open for
writing, with a ``migrate`` event; NULL is outside the chain (``integrity.OPTIONAL_COLUMNS``),
so the old rows keep their links. Opened read-only, its rows read as having no scoping data.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Iterator

from editscope.store.integrity import CHAINED_COLUMNS, GENESIS, MUTABLE_COLUMNS, chain_link, edit_checksum
from editscope.store.records import utc_now

log = logging.getLogger(__name__)

SCHEMA = """
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
    config_hash TEXT NOT NULL,
    chain TEXT,
    checksum TEXT,
    scoping TEXT
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
    lineage TEXT NOT NULL,
    chain TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    chain TEXT
);
"""

TABLES = ("edits", "edit_tags", "snapshots", "events")
_CHAIN_COLUMNS = {"edits": ("chain", "checksum"), "snapshots": ("chain",), "events": ("chain",)}


def connect(path: Path, *, create: bool, read_only: bool) -> sqlite3.Connection:
    """An autocommit connection to the journal at ``path``; an existing file must hold the
    journal's tables (else ``sqlite3.DatabaseError``, before anything is written to it)."""
    uri = "file:" + urllib.parse.quote(str(path.absolute()))
    if create:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(uri + ("?mode=ro" if read_only else "?mode=rw"), uri=True,
                               isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        try:
            tables = _tables(conn)
        except sqlite3.OperationalError:
            if not read_only:
                raise
            # A WAL database in a directory we cannot write: SQLite cannot create the shared
            # memory file. With no write-ahead log holding rows, the main file is the whole
            # committed state, and it can be read as immutable.
            wal = path.with_name(path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise
            conn.close()
            conn = sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, isolation_level=None,
                                   check_same_thread=False)
            tables = _tables(conn)
        if not create:
            missing = [t for t in TABLES if t not in tables]
            if missing:  # checked before anything (even the WAL mode) is written to the file
                raise sqlite3.DatabaseError(f"it has no {', '.join(missing)} table")
        if not read_only:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        if create:
            conn.execute("BEGIN IMMEDIATE")
            for statement in filter(str.strip, SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def has_chain(conn: sqlite3.Connection) -> bool:
    """Whether every chained table has its chain columns."""
    for table, columns in _CHAIN_COLUMNS.items():
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not set(columns) <= present:
            return False
    return True


def add_chain(conn: sqlite3.Connection, path: Path) -> None:
    """Add the chain columns to a journal written without them and seal every row as it is,
    in one transaction, with a ``migrate`` event."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        counts = {}
        for table, columns in _CHAIN_COLUMNS.items():
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column not in present:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
            counts[table] = _seal_table(conn, table)
        _migrate_event(conn, {"added": "integrity chain", "rows": counts})
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    log.warning("journal %s had no integrity chain (written by an older editscope): added it, sealing "
                "its %s existing rows as they are now", path, counts)


def _migrate_event(conn: sqlite3.Connection, payload: dict) -> None:
    """Insert a chained ``migrate`` event (inside the caller's transaction)."""
    conn.execute("INSERT INTO events (created_at, kind, payload) VALUES (?,?,?)",
                 (utc_now(), "migrate", json.dumps(payload)))
    event_id, created_at = conn.execute("SELECT id, created_at FROM events ORDER BY id DESC LIMIT 1").fetchone()
    previous = conn.execute("SELECT chain FROM events WHERE id < ? ORDER BY id DESC LIMIT 1", (event_id,)).fetchone()
    conn.execute("UPDATE events SET chain = ? WHERE id = ?",
                 (chain_link("events", previous[0] if previous else GENESIS,
                             (event_id, created_at, "migrate", json.dumps(payload))), event_id))


def has_scoping(conn: sqlite3.Connection) -> bool:
    """Whether the edits table has its ``scoping`` column."""
    return "scoping" in _columns(conn, "edits")


def add_scoping(conn: sqlite3.Connection, path: Path) -> None:
    """Add the ``scoping`` column to a journal written without it (NULL for the rows there:
    outside their chain), with a ``migrate`` event, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not has_scoping(conn):
            conn.execute("ALTER TABLE edits ADD COLUMN scoping TEXT")
            _migrate_event(conn, {"added": "scoping (scope rules and examples)"})
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    log.info("journal %s: added the scoping column (scope rules and examples)", path)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _seal_table(conn: sqlite3.Connection, table: str) -> int:
    previous, count = GENESIS, 0
    for row_id, values, tags, mutable, _chain, _checksum in chain_rows(conn, table):
        chain = chain_link(table, previous, values, tags)
        if table == "edits":
            conn.execute("UPDATE edits SET chain = ?, checksum = ? WHERE id = ?",
                         (chain, edit_checksum(chain, mutable), row_id))
        else:
            conn.execute(f"UPDATE {table} SET chain = ? WHERE id = ?", (chain, row_id))
        previous, count = chain, count + 1
    return count


def chain_rows(conn: sqlite3.Connection, table: str) -> Iterator[tuple]:
    """``(id, chained values, tags, mutable values, stored chain, stored checksum)`` of every
    row of ``table`` in id order (tags, mutable values and checksum: edits only)."""
    tags: dict[int, list[str]] = {}
    if table == "edits":
        for edit_id, tag in conn.execute("SELECT edit_id, tag FROM edit_tags ORDER BY edit_id, tag"):
            tags.setdefault(edit_id, []).append(tag)
    present = _columns(conn, table)
    chained = tuple(c if c in present else "NULL" for c in CHAINED_COLUMNS[table])  # a column added later
    extra = (*MUTABLE_COLUMNS, "chain", "checksum") if table == "edits" else ("chain",)
    n = len(chained)
    for row in conn.execute(f"SELECT {', '.join((*chained, *extra))} FROM {table} ORDER BY id"):
        if table == "edits":
            yield row[0], row[:n], tags.get(row[0], []), row[n:n + 4], row[n + 4], row[n + 5]
        else:
            yield row[0], row[:n], (), (), row[n], None


def bad_rows(conn: sqlite3.Connection, table: str) -> list[tuple[int, str | None]]:
    """The rows of ``table`` whose chain link (or, for edits, checksum) does not verify, as
    ``(id, name)`` (``name``: the snapshot name, else ``None``)."""
    bad: list[tuple[int, str | None]] = []
    previous = GENESIS
    for row_id, values, tags, mutable, chain, checksum in chain_rows(conn, table):
        ok = chain == chain_link(table, previous, values, tags) and (
            table != "edits" or checksum == edit_checksum(chain, mutable))
        if not ok:
            bad.append((row_id, values[2] if table == "snapshots" else None))
        previous = chain if isinstance(chain, str) else GENESIS
    return bad
