"""``EditStore``: an editing session on one base model, kept in a directory.

The directory layout is described in ``editscope.store.layout``.

The invariant: the editor's state equals the replay, from the initial state, of the edits whose
status is ``applied``, in id order. Every operation keeps it: an edit is journaled as pending
before it is applied and as applied after; rollback and revert rebuild the state first and then
commit their journal rows in one transaction; opening restores the snapshot that covers the
longest prefix of the applied edits and replays the rest. A failing operation restores the
editor state it started from and writes nothing.

For a slot editor (``SlotEditor``, i.e. ScopeMemory) ``revert`` changes the state in place (the
fact's slot removed, its earlier edit applied again) rather than by replay, and saves the result
as a snapshot with the new lineage: from there on the state is that snapshot plus the replay of
the later applied edits, which is what opening restores.

Every journal row is integrity-checked (``editscope.store.integrity``); a bad snapshot file is
passed over for an earlier one plus replay (``editscope.store.restore``); a reader
(``open(read_only=True)``) takes no lock and writes nothing; ``editscope.store.check`` verifies
and repairs a store's files.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

from editscope.editors.base import Editor, EditRejected
from editscope.store import journal as jr
from editscope.store.audit import AuditReport, check_own, run_audit
from editscope.store.changes import SlotEditor, StateChange, StateChanges  # noqa: F401 (re-exported)
from editscope.store.backend import Backend, DefaultBackend, weights_fingerprint
from editscope.store.export import export_adapter, export_manifest, export_merged
from editscope.store.images import ImageStore, ImageStoreError
from editscope.store.layout import (BUILTIN, JOURNAL, STORE_FORMAT, StoreError, WriterLock,
                                    check_manifest_copy, normalise_source, read_manifest, write_manifest)
from editscope.store.journal import EditRecord, SnapshotRecord, SQLiteJournal
from editscope.store.recovery import recover_pending
from editscope.store.replay import check_text, request_for
from editscope.store.scoping import never_answers, scoped_draft
from editscope.store.restore import StateRestore
from editscope.store.debris import find_debris, remove_debris
from editscope.store.snapshots import SnapshotError, SnapshotFiles, check_snapshot_name
from editscope.types import EditRequest, ImageInput

log = logging.getLogger(__name__)

DEFAULT_SNAPSHOT_EVERY = 10
RESERVED_PREFIXES = ("initial", "auto-")


class EditStore(StateRestore, StateChanges):
    """Open with ``EditStore.init(...)`` or ``EditStore.open(...)``; use as a context manager
    (or call ``close()``)."""

    def __init__(self, directory: Path, manifest: dict[str, Any], journal: jr.Journal) -> None:
        self.directory = directory
        self.manifest = manifest
        self.journal = journal
        self.images = ImageStore(directory / "images")
        self.snapshot_files = SnapshotFiles(directory / "snapshots")
        self.snapshot_every = int(manifest["snapshot_every"])
        self._editor: Editor | None = None
        self._vlm: Any = None
        self._lock = WriterLock(directory)
        self._since_snapshot = 0
        self.read_only = False
        self._backend: Backend | None = None
        self._source: str | None = None
        self._device: str | None = None

    # -- creating and opening ----------------------------------------------------------------
    @classmethod
    def init(
        cls,
        directory: str | Path,
        model_source: str | Path,
        preset: str | None = None,
        *,
        editor: str = "scopememory",
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        device: str | None = None,
        reference: str | Path | None = None,
        backend: Backend | None = None,
    ) -> "EditStore":
        """Create a store in ``directory`` (absent or empty) for the base model at
        ``model_source`` (a checkpoint directory or ``"builtin"``) and return it open.
        ``preset`` names the editor configuration (default: the editor's defaults; for the
        built-in model, the ``builtin`` preset).
        ``device`` (e.g. ``"cuda"``) is recorded as the device later opens load the model on.
        ``reference`` is a JSON file of ordinary inputs (``editscope.load_reference``) for an
        editor whose configuration takes a reference set, needed on a model not trained on a
        world; it is read once, and the initial snapshot holds what was built from it."""
        backend = backend or DefaultBackend()
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise StoreError(f"cannot create a store in {directory}: it exists and is not an empty directory")
        if not isinstance(snapshot_every, int) or snapshot_every < 1:
            raise StoreError(f"snapshot_every must be a positive integer, got {snapshot_every!r}")
        source = normalise_source(model_source)
        if preset is None and source == BUILTIN:
            preset = BUILTIN  # the built-in model's own preset
        try:
            vlm = backend.load_model(source, device)
            fingerprint = weights_fingerprint(vlm.model)
            config = backend.default_config(editor, preset)
            built = backend.build_editor(vlm, editor, config)
            backend.prepare_editor(built, source, config, None if reference is None else str(reference))
        except (OSError, ValueError, KeyError) as error:
            raise StoreError(f"cannot create a store on model {source!r}: {error}") from error
        manifest = {
            "format": STORE_FORMAT,
            "created_at": jr.utc_now(),
            "base_model": {"source": source, "fingerprint": fingerprint},
            "editor": {"name": editor, "preset": preset, "config": config,
                       "reference": None if reference is None else str(reference)},
            "snapshot_every": snapshot_every,
            "device": device,
        }
        created = not directory.exists()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            text = write_manifest(directory, manifest)
            store = cls(directory, manifest, SQLiteJournal(directory / JOURNAL, create=True))
            store._lock.acquire()
            store.journal.add_event("manifest", {"sha256": hashlib.sha256(text.encode()).hexdigest(), "text": text})
            store._vlm, store._editor = vlm, built
            store._backend, store._source, store._device = backend, source, device
            store._write_snapshot("initial", "initial", ())
        except BaseException:
            if created:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        log.info("created store %s on %s (%s)", directory, source, fingerprint)
        return store

    @classmethod
    def open(
        cls,
        directory: str | Path,
        model_source: str | Path | None = None,
        *,
        load_model: bool = True,
        device: str | None = None,
        backend: Backend | None = None,
        read_only: bool | None = None,
    ) -> "EditStore":
        """Open the store in ``directory``. With ``load_model`` (the default) the base model is
        loaded (from ``model_source`` or the recorded source), checked against the recorded
        fingerprint, and the editor state is restored: last covering snapshot, then replay of
        the applied edits after it; pending rows left by a killed process are marked rejected.
        Without it, only the journal is available (``log``, ``get``, ``snapshots``).
        ``device`` overrides the device recorded at ``init``.
        The journal must exist (it is never recreated: a missing or damaged one is a
        ``StoreError`` naming it) and every row of it must pass its integrity check.

        ``read_only=True`` opens a reader: it takes no writer lock (so it works while another
        process writes) and writes nothing (so it works on a read-only directory); with its
        model, its state is the replay of the last committed journal state (pending edits of a
        running writer are not in it); ``query``, ``log`` and ``audit(record=False)`` work,
        anything that writes is a ``StoreError`` saying so. Otherwise (``None``, the default,
        or ``False``) the journal is opened for writing when it can be; with the model this is
        the writer (the lock is taken, crash debris removed, abandoned pending rows marked
        rejected), and a store whose journal or directory is not writable is a ``StoreError``
        saying it is read-only; without the model, only the journal is read."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        store = cls(directory, manifest, SQLiteJournal(directory / JOURNAL, read_only=True if read_only else None))
        store.read_only = store.journal.read_only
        try:
            store.journal.verify()
            check_manifest_copy(directory, store.journal)
            if not load_model:
                return store
            if store.journal.read_only and not read_only:
                raise StoreError(
                    f"store {directory} is read-only (journal {store.journal.path} cannot be written):"
                    " this command writes to it; log, query and audit --dry-run work on a read-only store"
                )
            if read_only:
                store._load_editor(backend or DefaultBackend(), model_source, device)
                with store.journal.read_view():  # one committed state of the journal
                    store._restore(store.journal.applied_ids())
                return store
            store._lock.acquire()
            remove_debris(find_debris(directory, store.journal))
            store._load_editor(backend or DefaultBackend(), model_source, device)
            store._restore(store.journal.applied_ids())
            store._recover_pending()
        except BaseException:
            store.close()
            raise
        return store

    def _require_writer(self, what: str) -> None:
        if self.read_only:
            raise StoreError(f"store {self.directory} is open read-only: {what} writes to it (only log, "
                             "query and audit --dry-run read a store without writing)")

    def close(self) -> None:
        self.journal.close()
        self._lock.release()

    def __enter__(self) -> "EditStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- properties --------------------------------------------------------------------------
    @property
    def editor(self) -> Editor:
        if self._editor is None:
            raise StoreError(f"store {self.directory} was opened without its model")
        return self._editor

    @property
    def vlm(self) -> Any:
        self.editor  # noqa: B018 (raises when the model is not loaded)
        return self._vlm

    def applied_ids(self) -> list[int]:
        return self.journal.applied_ids()

    # -- editing -----------------------------------------------------------------------------
    def edit(
        self, request: EditRequest, tags: Iterable[str] = (), rephrases: Iterable[str] = (),
        *, require_absorbed: bool = False,
    ) -> EditRecord:
        """Journal ``request`` as pending, apply it, journal the outcome. Returns the row:
        status ``applied`` with the result, or ``rejected`` with the reason: the editor's
        rejection, a request the model cannot take (a ``ValueError`` of the editor, e.g. a
        prompt longer than its context; the state is rebuilt from the journal first), or, with
        ``require_absorbed``, an edit that did not take (the audit's own-probe check fails
        right after it: the state is put back as it was before the edit). A request that states
        no scope gets the store's rules' (``editscope.store.rules``); the answers of its
        ``never`` examples just before it are journaled with its result."""
        self._require_writer("edit")
        editor = self.editor
        draft = scoped_draft(editor, request, tuple(tags), tuple(rephrases), self.images, self.directory)
        before = self._state_copy() if require_absorbed else None
        edit_id = self.journal.add_edit(draft)
        return self._apply_journaled(self.journal.get_edit(edit_id), before)

    def _apply_journaled(self, record: EditRecord, before: dict | None = None) -> EditRecord:
        """Apply ``record``, an edit journaled as pending, and journal the outcome (the second
        half of :meth:`edit`, which ``ServiceStore.apply_pending`` shares). ``before``: the state
        to put back when the edit does not take (``require_absorbed``; None: not checked).
        Returns the row as journaled."""
        editor, edit_id = self.editor, record.id
        try:
            answers = never_answers(editor, record, self.images)  # on the state right before it
            result = editor.edit(request_for(record, self.images))
        except EditRejected as error:
            self.journal.set_status([edit_id], jr.REJECTED, error=str(error) or type(error).__name__)
            return self.journal.get_edit(edit_id)
        except BaseException as error:
            # Not a clean rejection: the editor state may be partly changed. Rebuild it from
            # the journal (this edit is not applied) before reporting the failure.
            self.journal.set_status([edit_id], jr.REJECTED, error=f"{type(error).__name__}: {error}")
            self._restore(self.journal.applied_ids())
            if isinstance(error, ValueError):  # the model cannot take this request
                return self.journal.get_edit(edit_id)
            raise
        if before is not None:
            check = check_own(editor, record, self._image_path)
            if not check.holds:
                editor.load_state_dict(before)
                self.journal.set_status([edit_id], jr.REJECTED, result={**result.to_dict(), **answers}, error=(
                    f"did not take (--require-absorbed): target loss {result.loss_after:.2f} after {result.steps} "
                    f"step(s), {check.token_accuracy:.0%} of the target's tokens are the model's top-1; state unchanged"))
                return self.journal.get_edit(edit_id)
        try:
            self.journal.set_status([edit_id], jr.APPLIED, result={**result.to_dict(), **answers})
        except BaseException:
            # Not journaled as applied, so it must not stay in the state either.
            self._restore(self.journal.applied_ids())
            raise
        self._since_snapshot += 1
        self._maybe_auto_snapshot()
        return self.journal.get_edit(edit_id)

    def query(self, image: ImageInput | None, prompt: str, max_new_tokens: int = 16) -> str:
        """The current state's greedy answer to ``prompt`` on ``image``."""
        check_text("the query's prompt", prompt, "the model cannot read it")
        if image is not None:
            image = _readable_image(image)
        return self.editor.answer(image, prompt, max_new_tokens=max_new_tokens)

    # -- reading the journal -----------------------------------------------------------------
    def get(self, edit_id: int) -> EditRecord:
        record = self.journal.get_edit(int(edit_id))
        if record is None:
            raise StoreError(f"no edit with id {edit_id} in store {self.directory}")
        return record

    def log(self, tag: str | None = None, status: str | None = None) -> list[EditRecord]:
        if status is not None and status not in jr.STATUSES:
            raise StoreError(f"unknown status {status!r}; expected one of {jr.STATUSES}")
        if tag is not None:
            check_text("the tag to filter by", tag, "no edit can carry it")
        return self.journal.edits(tag=tag, status=status)

    def snapshots(self) -> list[SnapshotRecord]:
        return self.journal.snapshots()

    def audits(self) -> list[jr.EventRecord]:
        return self.journal.events("audit")

    # -- snapshots, rollback, revert ---------------------------------------------------------
    def snapshot(self, name: str) -> SnapshotRecord:
        """Save the current editor state under ``name`` (unique within the store)."""
        self._require_writer("snapshot")
        self.editor  # noqa: B018
        try:
            check_snapshot_name(name)
        except SnapshotError as error:
            raise StoreError(str(error)) from error
        if name.startswith(RESERVED_PREFIXES):
            raise StoreError(f"snapshot names starting with {' or '.join(RESERVED_PREFIXES)} are reserved for the store")
        if self.journal.get_snapshot(name) is not None:
            raise StoreError(f"a snapshot named {name!r} already exists in store {self.directory}")
        return self._write_snapshot(name, "manual", tuple(self.applied_ids()))

    # -- audit and export --------------------------------------------------------------------
    def audit(self, record: bool = True) -> AuditReport:
        """Re-score every applied edit against the current state and journal the report
        (``record=False``: a dry run, nothing written; works on a read-only store)."""
        if record:
            self._require_writer("audit (without --dry-run)")
        applied = self.log(status=jr.APPLIED)
        try:
            report = run_audit(self.editor, applied, self._image_path)
        except ImageStoreError as error:
            raise StoreError(str(error)) from error
        if not record:
            return report
        event = self.journal.add_event("audit", report.to_dict())
        return AuditReport(report.state, report.entries, event.id, event.created_at)

    def export(self, out: str | Path, merged: bool = False) -> Path:
        """Write a deployable artifact to ``out`` (absent or empty): with ``merged``, a plain
        Hugging Face checkpoint (edits folded into the weights, processor included); without,
        the editor state (adapter) and its config. Both carry ``manifest.json``: the edits."""
        self._require_writer("export")
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise StoreError(f"cannot export to {out}: it exists and is not an empty directory")
        applied = self.log(status=jr.APPLIED)
        # Journaled first: a crash leaves the staging folder beside ``out``, and this event is
        # how opening and ``check --repair`` find it.
        self.journal.add_event("export_start", {"out": str(out.resolve())})
        manifest = export_manifest(self.manifest, self.directory, applied, merged)
        writer = export_merged if merged else export_adapter
        try:
            writer(self.editor, self._vlm, out, manifest)
        except (NotImplementedError, ValueError) as error:
            raise StoreError(f"cannot export to {out}: {error}") from error
        self.journal.add_event("export", {"out": str(out.resolve()), "merged": merged, "edits": [r.id for r in applied]})
        return out

    # -- internals ---------------------------------------------------------------------------
    def _write_snapshot(self, name: str, trigger: str, lineage: Sequence[int]) -> SnapshotRecord:
        state = self.editor.state_dict()
        file_name, digest = self.snapshot_files.write(name, state, lineage)
        record = self.journal.add_snapshot(name, trigger, file_name, digest, lineage)
        self._since_snapshot = 0
        return record

    def _maybe_auto_snapshot(self) -> None:
        """Snapshot every ``snapshot_every`` applied edits. A failure here only costs replay
        time on the next open (the edit is already journaled), so it is logged, not raised."""
        if self._since_snapshot < self.snapshot_every:
            return
        lineage = tuple(self.applied_ids())
        name = f"auto-{len(self.journal.snapshots())}-e{lineage[-1] if lineage else 0}"
        try:
            self._write_snapshot(name, "auto", lineage)
        except OSError as error:
            log.warning("store %s: automatic snapshot %s failed: %s", self.directory, name, error)

    def _recover_pending(self) -> None:
        recover_pending(self.directory, self.journal)


def _readable_image(image: ImageInput) -> ImageInput:
    if isinstance(image, (str, Path)) and not Path(image).is_file():
        raise StoreError(f"image file not found: {image}")
    return image

