"""Changing which edits are in effect: ``rollback`` and ``revert``, and what they report.

``StateChanges`` is a part of ``EditStore`` (a mixin: it uses the store's journal, editor,
images and its ``_restore`` / ``_write_snapshot``), kept in its own module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

from editscope.editors.base import EditRejected
from editscope.store import journal as jr
from editscope.store.images import ImageStoreError
from editscope.store.journal import EditRecord, SnapshotRecord
from editscope.store.layout import StoreError
from editscope.store.replay import request_for
from editscope.types import EditRequest

log = logging.getLogger(__name__)


@runtime_checkable
class SlotEditor(Protocol):
    """The capability ``revert`` uses on an editor that keeps one slot per fact, holding only
    the fact's latest edit (ScopeMemory): the fact an edit is about, and removing its slot."""

    def fact_of(self, request: EditRequest) -> bytes: ...

    def forget(self, fact: bytes) -> bool: ...


@dataclass(frozen=True)
class StateChange:
    """What a rollback or revert did: the edits in effect afterwards, those taken out of
    effect, those put back in effect, and the snapshot the state was rebuilt from (or, for a
    slot revert, saved to)."""

    kind: str
    target: str
    applied: tuple[int, ...]
    removed: tuple[int, ...]
    restored: tuple[int, ...]
    from_snapshot: str
    # How the state was changed: "replay" (restored from ``from_snapshot``, later edits
    # replayed), "slot" (a slot editor's revert: the fact's slot removed and ``reapplied``, its
    # earlier edit, applied again if there is one) or "unchanged" (a slot editor's revert of an
    # edit a later edit of its fact had already replaced). For "slot" and "unchanged" the
    # resulting state is saved as snapshot ``from_snapshot`` (trigger "revert").
    method: str = "replay"
    reapplied: int | None = None


class StateChanges:
    """``rollback`` and ``revert`` of ``EditStore``."""

    def rollback(self, to: int | str) -> StateChange:
        """Return to the state right after edit ``to`` (an applied edit id: later applied
        edits become ``rolled_back``) or to snapshot ``to`` (its exact state: the edits it
        contains are applied again, all others rolled back). Nothing is deleted."""
        self._require_writer("rollback")
        applied = self.applied_ids()
        snapshot = None
        if isinstance(to, str) and not to.strip().isdigit():
            snapshot = self.journal.get_snapshot(to)
            if snapshot is None:
                raise StoreError(f"no snapshot named {to!r} in store {self.directory}")
            target = list(snapshot.lineage)
        else:
            record = self.get(int(to))
            if record.status != jr.APPLIED:
                raise StoreError(
                    f"cannot roll back to edit {record.id}: its status is {record.status}; "
                    "rollback needs an applied edit id or a snapshot name"
                )
            target = [i for i in applied if i <= record.id]
        label = snapshot.name if snapshot else f"edit {int(to)}"
        return self._change_state("rollback", label, target, jr.ROLLED_BACK, snapshot)

    def revert(self, edit_id: int) -> StateChange:
        """Take one applied edit out. The edit's row becomes ``reverted``.

        Editors without fact slots: restore the last snapshot before it and replay the later
        applied edits (cost: one snapshot load and up to ``snapshot_every`` edits, more when
        the edit is older than the last snapshot).

        Slot editors (``SlotEditor``: ScopeMemory, one slot per fact holding the fact's latest
        edit): when the edit is its fact's latest applied edit, remove the fact's slot and,
        when an earlier applied edit of the fact exists, apply the latest such one again; when
        a later applied edit of the same fact exists, that edit already replaced the slot, so
        the state does not change at all and only the journal does. Cost: one encode (no
        forward pass) per applied edit to find the fact's edits, one ``forget``, at most one
        ``edit``, and one snapshot written: other slots' thresholds were calibrated with the
        removed slot present, so the state is not bit-equal to a replay without the edit, and
        the snapshot is what makes reopening give this state exactly."""
        self._require_writer("revert")
        record = self.get(edit_id)
        if record.status != jr.APPLIED:
            raise StoreError(f"cannot revert edit {record.id}: its status is {record.status}, not applied")
        target = [i for i in self.applied_ids() if i != record.id]
        if isinstance(self.editor, SlotEditor):
            return self._revert_slot(record, target)
        return self._change_state("revert", f"edit {record.id}", target, jr.REVERTED)

    def _change_state(
        self, kind: str, label: str, target: Sequence[int], removed_status: str, snapshot: SnapshotRecord | None = None
    ) -> StateChange:
        """Rebuild the state as the replay of ``target``, then journal it in one transaction:
        applied edits not in ``target`` get ``removed_status``, edits of ``target`` not applied
        become applied again, and a ``kind`` event records the change. On any failure the
        editor state is put back and nothing is journaled."""
        applied = self.applied_ids()
        removed = tuple(i for i in applied if i not in target)
        restored = tuple(i for i in target if i not in applied)
        before = {k: v.detach().clone() for k, v in self.editor.state_dict().items()}
        since = self._since_snapshot
        try:
            used = self._restore(target, snapshot)
            change = StateChange(kind, label, tuple(target), removed, restored, used)
            with self.journal.transaction():
                self.journal.set_status(removed, removed_status)
                self.journal.set_status(restored, jr.APPLIED)
                self.journal.add_event(kind, _change_payload(change))
        except BaseException:
            self.editor.load_state_dict(before)
            self._since_snapshot = since
            raise
        return change

    def _revert_slot(self, record: EditRecord, target: Sequence[int]) -> StateChange:
        """``revert`` on a slot editor (see there), in one transaction: on any failure the
        editor state is put back and nothing is journaled."""
        editor = self.editor
        assert isinstance(editor, SlotEditor)
        applied = self.log(status=jr.APPLIED)
        try:
            facts = {r.id: editor.fact_of(request_for(r, self.images)) for r in applied}
        except ImageStoreError as error:
            raise StoreError(f"cannot revert edit {record.id}: {error}") from error
        fact = facts[record.id]
        later = [r.id for r in applied if r.id > record.id and facts[r.id] == fact]
        earlier = [r for r in applied if r.id < record.id and facts[r.id] == fact]
        before = {k: v.detach().clone() for k, v in editor.state_dict().items()}
        since = self._since_snapshot
        method, reapplied = "unchanged", None
        try:
            if not later:
                method = "slot"
                if not editor.forget(fact):
                    raise StoreError(f"cannot revert edit {record.id}: the editor holds no slot for its fact")
                if earlier:
                    reapplied = earlier[-1].id
                    try:
                        editor.edit(request_for(earlier[-1], self.images))
                    except (EditRejected, ImageStoreError) as error:
                        raise StoreError(
                            f"cannot revert edit {record.id}: applying edit {reapplied} of the same fact "
                            f"again failed ({error})"
                        ) from error
            # else: a later edit of this fact replaced its slot; this edit left nothing behind
            # in it, and removing the slot would remove the later edit instead.
            name = f"auto-{len(self.journal.snapshots())}-r{record.id}"
            with self.journal.transaction():
                snapshot = self._write_snapshot(name, "revert", target)
                change = StateChange("revert", f"edit {record.id}", tuple(target), (record.id,), (),
                                     snapshot.name, method, reapplied)
                self.journal.set_status([record.id], jr.REVERTED)
                self.journal.add_event("revert", _change_payload(change))
        except BaseException:
            editor.load_state_dict(before)
            self._since_snapshot = since
            raise
        log.info("reverted edit %d by its slot (%s%s)", record.id, method,
                 f", edit {reapplied} applied again" if reapplied is not None else "")
        return change


def _change_payload(change: StateChange) -> dict[str, Any]:
    return {
        "target": change.target,
        "applied": list(change.applied),
        "removed": list(change.removed),
        "restored": list(change.restored),
        "from_snapshot": change.from_snapshot,
        "method": change.method,
        "reapplied": change.reapplied,
    }
