"""The journal's integrity chain: a checksum on every row, chained to the row before it.

Each table of the journal (``edits``, ``snapshots``, ``events``) is one chain. A row's
``chain`` is the SHA-256 of the previous row's ``chain`` (64 zeros for the first row) and of
the row's canonical content: its columns that never change once written, as stored (JSON
columns as their stored text), with the table name and the row id. A changed byte in a row
breaks that row's link; a deleted or inserted row breaks the link of the row after it.

Edit rows also change status (pending -> applied -> reverted ...), so they carry a second
column, ``checksum``: the SHA-256 of the row's ``chain`` and of its mutable columns (status,
updated_at, result, error). It is rewritten with each status change, and before rewriting it
the journal checks the old one, so a changed status is never sealed as if it were valid.

What the chain cannot see: rows removed from the end of a table (there is nothing after them
to break), and a journal rewritten as a whole with valid checksums (the checksums are not
keyed: they guard against damage and stray edits, not against a forger).

A column added to a table after the chain existed (``OPTIONAL_COLUMNS``: an edit's
``scoping``, its scope rule and scope examples) is part of a row's content only when it is not
NULL, so rows written before it keep their links, and a value set or cleared later breaks one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

GENESIS = "0" * 64

# The columns of each table that a row's chain covers, in order (the row id comes first).
CHAINED_COLUMNS: dict[str, tuple[str, ...]] = {
    "edits": ("id", "created_at", "prompt", "target", "scope", "image_sha256", "rephrases",
              "anchors", "config_hash", "scoping"),
    "snapshots": ("id", "created_at", "name", "trigger", "file", "sha256", "lineage"),
    "events": ("id", "created_at", "kind", "payload"),
}
# Chained columns added later (the last ones of CHAINED_COLUMNS): covered only when not NULL.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {"edits": ("scoping",)}
# The columns of an edit row that its ``checksum`` covers (those that change with its status).
MUTABLE_COLUMNS: tuple[str, ...] = ("status", "updated_at", "result", "error")


def _canonical(values: Sequence[Any]) -> str:
    """Values (``str``, ``int`` or ``None``; a list of strings for an edit's tags) as one
    unambiguous ASCII text: Python's ``ascii()`` of their list (quoted, escaped strings)."""
    return ascii(list(values))


def _digest(previous: str, content: str) -> str:
    return hashlib.sha256(f"{previous}\n{content}".encode("ascii")).hexdigest()


def chain_link(table: str, previous: str, values: Sequence[Any], tags: Sequence[str] = ()) -> str:
    """The ``chain`` of a row of ``table`` whose chained columns hold ``values`` (in
    ``CHAINED_COLUMNS[table]`` order; the ``OPTIONAL_COLUMNS`` may be left off, as NULL) after
    a row whose chain is ``previous``. An edit's tags (kept in their own table) are part of its
    content, sorted."""
    values = _without_null_optional(table, values)
    content = [table, *values] if table != "edits" else [table, *values, sorted(set(tags))]
    return _digest(previous, _canonical(content))


def _without_null_optional(table: str, values: Sequence[Any]) -> list[Any]:
    required = len(CHAINED_COLUMNS[table]) - len(OPTIONAL_COLUMNS.get(table, ()))
    return [*values[:required], *(v for v in values[required:] if v is not None)]


def edit_checksum(chain: str, mutable: Sequence[Any]) -> str:
    """The ``checksum`` of an edit row: its chain and its ``MUTABLE_COLUMNS`` values."""
    return _digest(chain, _canonical(mutable))


def row_label(table: str, row_id: int, name: str | None = None) -> str:
    """How a row is named in errors: ``edit 7``, ``snapshot 'auto-1-e3' (row 2)``, ``event 4``."""
    if table == "edits":
        return f"edit {row_id}"
    if table == "snapshots":
        return f"snapshot {name!r} (row {row_id})" if name is not None else f"snapshot row {row_id}"
    return f"event {row_id}"


def bad_row_message(path: object, label: str) -> str:
    return (
        f"journal {path}: the row of {label} fails its integrity check (its content does not match"
        " the checksum written with it, or the row before it is missing or changed): it was changed"
        " outside editscope or the file is damaged; restore journal.sqlite from a backup"
        " (`editscope check` lists every such row)"
    )
