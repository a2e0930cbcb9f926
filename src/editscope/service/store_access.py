"""The store as the service uses it: ``EditStore.edit`` split in two, so that an edit is
journaled as pending when it arrives (and acknowledged) and applied later by the one writer.

``ServiceStore`` is an ``EditStore`` (same journal, images, snapshots, replay) with:

- ``submit``: validate the request, store its images, journal it as pending; nothing applied;
- ``apply_pending``: apply the oldest pending edit and journal the outcome with the routine
  ``EditStore.edit`` ends with (``_apply_journaled``: rejection, failure and auto-snapshot
  included);
- opening leaves pending rows pending (``EditStore.open`` marks them abandoned): the service
  applies those it acknowledged and abandons the others (``abandon``).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from editscope.store import journal as jr
from editscope.store.journal import EditRecord
from editscope.store.layout import StoreError
from editscope.store.scoping import scoped_draft
from editscope.store.store import EditStore
from editscope.types import EditRequest


class ServiceStore(EditStore):
    """See the module docstring. Open with ``ServiceStore.open(directory)``."""

    def _recover_pending(self) -> None:
        """Pending rows stay pending: the service decides which were acknowledged."""

    def pending_ids(self) -> list[int]:
        return [record.id for record in self.journal.edits(status=jr.PENDING)]

    def abandon(self, edit_ids: Sequence[int], reason: str) -> None:
        """Mark pending ``edit_ids`` rejected with ``reason`` and journal a ``recover`` event."""
        if not edit_ids:
            return
        with self.journal.transaction():
            self.journal.set_status(list(edit_ids), jr.REJECTED, error=reason)
            self.journal.add_event("recover", {"abandoned": list(edit_ids)})

    def submit(self, request: EditRequest, tags: Iterable[str] = (), rephrases: Iterable[str] = ()) -> EditRecord:
        """Journal ``request`` as pending (texts checked, images stored first, the store's scoping
        rules applied: ``scoped_draft``, as ``EditStore.edit`` does) and return the row; a
        ``StoreError`` (a ``ScopeRuleConflict`` too) journals nothing."""
        self._require_writer("edit")
        draft = scoped_draft(self.editor, request, tuple(tags), tuple(rephrases), self.images, self.directory)
        return self.get(self.journal.add_edit(draft))

    def apply_pending(self, edit_id: int) -> EditRecord:
        """Apply pending edit ``edit_id``, which must be the oldest pending one (edits are
        applied in journal order), and journal the outcome: ``applied`` with the result or
        ``rejected`` with the editor's reason. Any other failure marks it rejected, rebuilds
        the state from the journal and is raised."""
        record = self.get(edit_id)
        if record.status != jr.PENDING:
            raise StoreError(f"edit {edit_id} is {record.status}, not pending")
        oldest = self.pending_ids()[0]
        if oldest != edit_id:
            raise StoreError(f"edit {edit_id} cannot be applied before pending edit {oldest} (journal order)")
        return self._apply_journaled(record)
