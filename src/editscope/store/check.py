"""``editscope check``: verifying a store's files, and repairing what can be rebuilt.

``check_store`` reads, and writes nothing: the manifest (against the copy the journal keeps),
the journal (every row's integrity check), every image an edit refers to (by its hash; scope
examples' included), every snapshot file (hash and format), the scoping rules file and crash
debris (``editscope.store.debris``). Each problem names its file and what it affects.

With ``repair`` the store is opened for writing (its model loaded), which removes the debris
and marks abandoned pending edits rejected; then each bad or missing snapshot is rebuilt from
the best good earlier snapshot (or the rebuilt initial state) plus replay, and written back
under its recorded name when the rebuilt state is bit-exact (its hash is the recorded one).
A damaged or missing ``store.json`` is written back from the journal's copy. Nothing else is
repaired: journal rows are never deleted or re-sealed, images cannot be made
again (they must be restored from where they came from), and a missing or unreadable journal
or manifest is reported and nothing is created in its place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editscope.store.backend import Backend
from editscope.store.debris import find_debris, remove_debris
from editscope.store.images import ImageStore, ImageStoreError
from editscope.store.journal import APPLIED, SQLiteJournal
from editscope.store.atomic import write_atomically
from editscope.store.layout import (JOURNAL, MANIFEST, StoreError, WriterLock, check_manifest_copy, manifest_copy,
                                    read_manifest)
from editscope.store.rules import RULES_FILE, load_rules
from editscope.store.snapshots import SnapshotError, SnapshotFiles

log = logging.getLogger(__name__)

MANIFEST_AFFECTS = "the whole store: no command can open it"


@dataclass(frozen=True)
class Problem:
    """``file``: the damaged file (or the journal, for a bad row); ``what``: what is wrong;
    ``affects``: what does not work because of it; ``repaired``: what ``--repair`` did about it
    (``None``: not repaired)."""

    file: str
    what: str
    affects: str
    repaired: str | None = None


@dataclass
class CheckReport:
    directory: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def unrepaired(self) -> list[Problem]:
        return [p for p in self.problems if p.repaired is None]

    def to_dict(self) -> dict[str, Any]:
        return {"store": str(self.directory), "checked": self.checked, "notes": self.notes,
                "problems": [p.__dict__ for p in self.problems]}


def check_store(directory: str | Path, *, repair: bool = False, backend: Backend | None = None) -> CheckReport:
    """Check (and with ``repair``, repair) the store in ``directory``; see the module docstring."""
    directory = Path(directory)
    report = CheckReport(directory)
    manifest_error = None
    try:
        read_manifest(directory)
    except StoreError as error:
        manifest_error = str(error)
    try:
        journal = SQLiteJournal(directory / JOURNAL, read_only=True)
    except StoreError as error:
        if manifest_error:
            report.problems.append(Problem(MANIFEST, manifest_error, MANIFEST_AFFECTS))
        report.problems.append(Problem(JOURNAL, str(error), "the whole store: its history of edits (nothing was "
                                       "recreated: restore the file from a backup)"))
        return report
    try:
        with journal.unchecked():
            copy = manifest_copy(journal)
            if manifest_error is None:
                try:
                    check_manifest_copy(directory, journal)
                except StoreError as error:
                    manifest_error = str(error)
        if manifest_error:
            report.problems.append(Problem(MANIFEST, manifest_error, MANIFEST_AFFECTS + (
                "; check --repair writes it back from the journal's copy" if copy else
                " (the journal keeps no copy of it: restore it from a backup)")))
        _check_files(directory, journal, report)
        _check_rules(directory, report)
    finally:
        journal.close()
    if repair and manifest_error and copy:
        write_atomically(directory / MANIFEST, copy["text"])
        _mark(report, report.problems[0], "written back from the copy the journal keeps")
    if repair and not any(p.file in (MANIFEST, JOURNAL) for p in report.unrepaired):
        _repair(directory, report, backend)
    return report


def _check_rules(directory: Path, report: CheckReport) -> None:
    """A scoping rules file that cannot be used is a problem (edits are refused while it is)."""
    try:
        load_rules(directory)
    except StoreError as error:
        report.problems.append(Problem(RULES_FILE, str(error), "every edit (they are refused until the file is "
                                       "fixed: edit it, or see `editscope rules`); nothing else"))


def _check_files(directory: Path, journal: SQLiteJournal, report: CheckReport) -> None:
    if not journal.chained:
        report.notes.append(f"journal {journal.path} has no integrity chain yet (written by an older editscope): its "
                            "rows are not verified; the next open for writing (e.g. check --repair) adds it")
    for label in journal.bad_rows():
        report.problems.append(Problem(JOURNAL, f"the row of {label} fails its integrity check", _row_affects(label)))
    with journal.unchecked():
        edits, snapshots = journal.edits(), journal.snapshots()
        debris = _debris(directory, journal, report)
    report.checked = {"edits": len(edits), "snapshots": len(snapshots)}
    images, users = ImageStore(directory / "images"), {}
    for record in edits:
        for sha in (record.image_sha256, *(a.image_sha256 for a in record.anchors),
                    *(e.image_sha256 for e in (*record.also, *record.never))):
            if sha is not None:
                users.setdefault(sha, []).append(record)
    report.checked["images"] = len(users)
    for sha, records in users.items():
        try:
            images.get(sha)
        except ImageStoreError as error:
            applied = [r.id for r in records if r.status == APPLIED]
            affects = f"edit(s) {', '.join(str(r.id) for r in records)}: they cannot be replayed"
            if applied:
                affects += (f"; {applied} are applied, so opening the store with its model fails when it must "
                            "replay them, as do rollback and revert past them")
            report.problems.append(Problem(str(images.path_for(sha).relative_to(directory)), str(error),
                                           affects + " (put the original image file back)"))
    known = {record.id for record in edits}
    for snapshot in snapshots:
        missing = [i for i in snapshot.lineage if i not in known]
        if missing:  # the chain cannot see rows cut off its end; the snapshots remember them
            report.problems.append(Problem(JOURNAL, f"snapshot {snapshot.name!r} holds edit(s) "
                                           f"{', '.join(map(str, missing))}, which the journal has no row for "
                                           "(rows deleted from its end)", "the history of those edits: they are not "
                                           "logged, audited or replayed (restore the journal from a backup)"))
    files = SnapshotFiles(directory / "snapshots")
    for snapshot in snapshots:
        try:
            files.read(snapshot.name, snapshot.file, snapshot.sha256)
        except SnapshotError as error:
            report.problems.append(Problem(
                f"snapshots/{snapshot.file}", str(error),
                f"snapshot {snapshot.name!r} ({len(snapshot.lineage)} edits): opening and rollback use an earlier "
                "snapshot plus replay instead, until check --repair rebuilds it"))
    for item in debris:
        report.problems.append(Problem(str(item.path.relative_to(directory)) if item.path.is_relative_to(directory)
                                       else str(item.path), f"crash debris: {item.what}",
                                       "nothing but disk space (removed by check --repair or the next open for writing)"))


def _debris(directory: Path, journal: SQLiteJournal, report: CheckReport) -> list:
    lock = WriterLock(directory)
    try:
        lock.acquire()
    except (StoreError, OSError):
        report.notes.append("another process has the store open for writing (or the lock cannot be taken): "
                            "temporary files may be in use, so crash debris is not looked for")
        return []
    try:
        return find_debris(directory, journal)
    finally:
        lock.release()


def _row_affects(label: str) -> str:
    what = f"{label}: its content cannot be trusted" if label.startswith("edit ") else f"{label} cannot be trusted"
    return (what + "; every command that opens the store refuses it until journal.sqlite is restored from a backup "
            "(rows are never deleted or re-sealed by repair)")


def _repair(directory: Path, report: CheckReport, backend: Backend | None) -> None:
    from editscope.store.store import EditStore

    if any(p.file == JOURNAL for p in report.problems):
        report.notes.append("not repaired: the journal has rows that fail their integrity check")
        return
    lock = WriterLock(directory)
    try:
        lock.acquire()
    except (StoreError, OSError) as error:
        report.notes.append(f"not repaired: {error}")
        return
    journal = SQLiteJournal(directory / JOURNAL, read_only=True)
    try:
        remove_debris(find_debris(directory, journal))
    finally:
        journal.close()
        lock.release()
    for problem in [p for p in report.problems if p.what.startswith("crash debris")]:
        _mark(report, problem, "removed")
    try:
        store = EditStore.open(directory, backend=backend)  # recovers pending rows
    except StoreError as error:
        report.notes.append(f"not repaired: the store cannot be opened for writing: {error}")
        return
    with store:
        _rebuild_snapshots(store, report)
        store.journal.add_event("repair", {"repaired": [p.__dict__ for p in report.problems if p.repaired]})


def _rebuild_snapshots(store: Any, report: CheckReport) -> None:
    """Rebuild each bad snapshot (oldest first, so that later ones can start from it); the
    editor state is left as the last rebuild made it (the store is closed right after)."""
    for snapshot in store.journal.snapshots():
        problem = next((p for p in report.problems if p.file == f"snapshots/{snapshot.file}"), None)
        if problem is None:
            continue
        used = store._restore(list(snapshot.lineage))
        digest = store.snapshot_files.rewrite(snapshot.file, store.editor.state_dict(), snapshot.lineage,
                                              snapshot.sha256)
        if digest == snapshot.sha256:
            _mark(report, problem, f"rebuilt from {used} plus replay (bit-exact: SHA-256 as recorded)")
        else:
            report.notes.append(
                f"not repaired: snapshot {snapshot.name!r} rebuilt from {used} plus replay differs from the "
                f"recorded state (SHA-256 {digest}, recorded {snapshot.sha256}; a slot editor's revert is not "
                "reproduced by replay); opening and rollback keep using an earlier snapshot plus replay")


def _mark(report: CheckReport, problem: Problem, how: str) -> None:
    index = report.problems.index(problem)
    report.problems[index] = Problem(problem.file, problem.what, problem.affects, how)
