"""Rebuilding the editor state of a store: loading the base model and its editor, then the
snapshot that covers the longest prefix of the wanted edits, then replaying the rest.

When that snapshot's file is missing, truncated or damaged, the next best snapshot is used
(a shorter prefix, more replay), down to the initial one, and past it to the initial state
rebuilt as ``init`` made it (a fresh editor given its reference set): a warning names the bad
snapshot and the one used. A replay from an earlier snapshot gives the same state as the bad
one held, since replay is deterministic (except after a slot editor's revert, whose snapshot
is the only exact record of that state: then the state is the replay without the slot
calibration that revert did, and the warning says so).

``StateRestore`` is a part of ``EditStore`` (a mixin), kept in its own module.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from editscope.editors.base import Editor, EditRejected
from editscope.store.backend import Backend, weights_fingerprint
from editscope.store.images import ImageStoreError
from editscope.store.journal import SnapshotRecord
from editscope.store.layout import StoreError, normalise_source
from editscope.store.replay import request_for
from editscope.store.snapshots import SnapshotError

log = logging.getLogger(__name__)

INITIAL_REBUILT = "initial (rebuilt)"


class StateRestore:
    """Loading the model and editor, and ``_restore`` with its fallbacks, for ``EditStore``."""

    def _load_editor(self, backend: Backend, model_source: str | Path | None, device: str | None) -> None:
        recorded = self.manifest["base_model"]
        source = normalise_source(model_source) if model_source is not None else recorded["source"]
        self._backend, self._source, self._device = backend, source, device or self.manifest.get("device")
        self._vlm = self._load_base_model()
        self._editor = self._fresh_editor(prepared=False)

    def _load_base_model(self) -> Any:
        """The store's base model from its source, checked against the recorded fingerprint."""
        recorded, source = self.manifest["base_model"], self._source
        try:
            vlm = self._backend.load_model(source, self._device)
        except (OSError, ValueError) as error:
            raise StoreError(f"cannot load the base model of store {self.directory} from {source!r}: {error}") from error
        fingerprint = weights_fingerprint(vlm.model)
        if fingerprint != recorded["fingerprint"]:
            raise StoreError(
                f"wrong base model for store {self.directory}: the model at {source!r} has weights "
                f"fingerprint {fingerprint}, the store was created on {recorded['source']!r} with "
                f"{recorded['fingerprint']}"
            )
        return vlm

    def _fresh_editor(self, *, prepared: bool) -> Editor:
        """A new editor on the loaded model; ``prepared``: given its reference set as ``init``
        did, i.e. the initial state (the reference file, if any, must still be there)."""
        editor = self.manifest["editor"]
        built = self._backend.build_editor(self._vlm, editor["name"], editor["config"])
        if prepared:
            try:
                self._backend.prepare_editor(built, self._source, editor["config"], editor.get("reference"))
            except (OSError, ValueError, KeyError) as error:
                raise StoreError(f"cannot rebuild the initial state of store {self.directory}: {error}") from error
        return built

    def _image_path(self, sha256: str | None) -> Path | None:
        return self.images.get(sha256) if sha256 is not None else None

    def _snapshot_candidates(self, target: Sequence[int]) -> list[SnapshotRecord]:
        """The snapshots whose lineage is a prefix of ``target``, longest first (latest first
        on ties)."""
        snapshots = [s for s in self.journal.snapshots() if tuple(target[: len(s.lineage)]) == s.lineage]
        if not any(s.trigger == "initial" for s in snapshots):
            raise StoreError(f"store {self.directory} has no initial snapshot; its journal is damaged")
        return sorted(snapshots, key=lambda s: (len(s.lineage), s.id), reverse=True)

    def _best_snapshot(self, target: Sequence[int]) -> SnapshotRecord:
        """The snapshot whose lineage is the longest prefix of ``target`` (latest on ties)."""
        return self._snapshot_candidates(target)[0]

    def _load_snapshot(self, snapshot: SnapshotRecord) -> None:
        try:
            state = self.snapshot_files.read(snapshot.name, snapshot.file, snapshot.sha256)
            self.editor.load_state_dict(state)
        except SnapshotError as error:
            raise StoreError(str(error)) from error

    def _start_from(self, target: Sequence[int], first: SnapshotRecord | None) -> SnapshotRecord | None:
        """Load the best usable snapshot for ``target`` (``first`` if given and usable); ``None``
        when none is: the editor then holds the rebuilt initial state."""
        candidates = [first] if first is not None else []
        candidates += [s for s in self._snapshot_candidates(target) if first is None or s.id != first.id]
        bad: list[str] = []
        for snapshot in candidates:
            try:
                self._load_snapshot(snapshot)
            except StoreError as error:
                bad.append(snapshot.name)
                log.warning("store %s: %s; falling back to an earlier snapshot and replay", self.directory, error)
                continue
            if bad:
                exact = all(s.trigger != "revert" for s in candidates[: len(bad)])
                log.warning("store %s: state rebuilt from snapshot %r plus replay instead of %s%s (run `editscope "
                            "check --repair` to rewrite the bad snapshot files)", self.directory, snapshot.name,
                            ", ".join(map(repr, bad)), "" if exact else
                            "; a slot revert's snapshot was among them, so the state is the replay without "
                            "the recalibration that revert did")
            return snapshot
        # the loaded model carries the current editor's modules (and an editor such as FT
        # writes into the weights): the initial state is rebuilt on the base model, loaded again
        self._vlm = self._load_base_model()
        self._editor = self._fresh_editor(prepared=True)
        log.warning("store %s: no snapshot file is usable (%s); state rebuilt from the initial state plus replay "
                    "(run `editscope check --repair`)", self.directory, ", ".join(map(repr, bad)))
        return None

    def _restore(self, target: Sequence[int], snapshot: SnapshotRecord | None = None) -> str:
        """Make the editor state the replay of ``target`` (from ``snapshot``, if given and
        usable, else the best usable one); returns the name of the snapshot used."""
        start = self._start_from(target, snapshot)
        replay = list(target[len(start.lineage):]) if start is not None else list(target)
        for edit_id in replay:
            record = self.get(edit_id)
            try:
                self.editor.edit(request_for(record, self.images))
            except ImageStoreError as error:
                raise StoreError(f"cannot replay edit {edit_id}: {error}") from error
            except EditRejected as error:
                raise StoreError(
                    f"replaying edit {edit_id} was rejected ({error}); the state of store "
                    f"{self.directory} cannot be reproduced"
                ) from error
        self._since_snapshot = len(replay)
        name = start.name if start is not None else INITIAL_REBUILT
        log.info("restored snapshot %r and replayed %d edit(s)", name, len(replay))
        return name

    def _state_copy(self) -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in self.editor.state_dict().items()}
