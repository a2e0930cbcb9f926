"""A writer's recovery of pending edits on open: rows journaled as pending by a process that
stopped before applying them are marked rejected (abandoned), unless ``editscope serve``
acknowledged them, in which case only the service may apply them and the writer is refused."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Sequence

from editscope.store import journal as jr
from editscope.store.layout import StoreError

log = logging.getLogger(__name__)


def acknowledged_by_service(directory: Path, edit_ids: Sequence[int]) -> list[int]:
    """Those of pending ``edit_ids`` that ``editscope serve`` acknowledged (its ledger in
    ``service.sqlite`` has them): only the service applies them; a CLI writer must not
    abandon them."""
    path = directory / "service.sqlite"
    if not edit_ids or not path.exists():
        return []
    try:
        # read-write (the file exists): a server killed mid-write leaves a hot journal that only
        # a writable connection rolls back; the caller holds the store's writer lock
        with contextlib.closing(sqlite3.connect(path, timeout=10.0)) as conn:
            marks = ",".join("?" * len(edit_ids))
            rows = conn.execute(f"SELECT edit_id FROM writes WHERE action = 'edit' AND edit_id IN ({marks})",
                                list(edit_ids)).fetchall()
    except sqlite3.Error as error:
        raise StoreError(f"service file {path} cannot be read ({error}): it may hold acknowledged edits") from error
    return sorted(row[0] for row in rows)


def recover_pending(directory: Path, journal: jr.Journal) -> None:
    """Mark the abandoned pending edits of the store in ``directory`` rejected (see the module
    docstring); a ``StoreError`` naming the edits the service acknowledged."""
    pending = [r.id for r in journal.edits(status=jr.PENDING)]
    if served := acknowledged_by_service(directory, pending):
        raise StoreError(f"store {directory} has edit(s) {served} acknowledged by `editscope serve` and not yet "
                         f"applied: run `editscope serve --store {directory}` to apply them (a writer here "
                         "would abandon them)")
    if not pending:
        return
    with journal.transaction():
        journal.set_status(pending, jr.REJECTED, error="abandoned: the process stopped before the edit was applied")
        journal.add_event("recover", {"abandoned": pending})
    log.warning("store %s: marked %d abandoned pending edit(s) rejected: %s", directory, len(pending), pending)
