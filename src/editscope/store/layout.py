"""The store directory's fixed parts: its manifest (``store.json``), the writer lock, and the
error type of the store.

Layout of a store directory::

    store.json        base model (source + weights fingerprint), editor name and config, K
    journal.sqlite    the journal (edits, snapshots, rollbacks, reverts, audits, exports)
    images/           content-addressed images
    snapshots/        editor states (safetensors)
    lock              held (flock) by the one process that has the store open for writing
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import IO, Any

from editscope.store.atomic import write_atomically

STORE_FORMAT = "editscope-store/1"
MANIFEST = "store.json"
JOURNAL = "journal.sqlite"
BUILTIN = "builtin"


class StoreError(RuntimeError):
    """A store operation failed; the store (files, journal, editor state) is unchanged."""


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise StoreError(f"{directory} is not an editscope store (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StoreError(f"{path} is not valid JSON: {error}") from error
    if manifest.get("format") != STORE_FORMAT:
        raise StoreError(f"{path}: unknown store format {manifest.get('format')!r}, expected {STORE_FORMAT!r}")
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> str:
    """Write ``store.json``; returns the text written (``init`` keeps a copy in the journal)."""
    text = json.dumps(manifest, indent=2) + "\n"
    write_atomically(directory / MANIFEST, text)
    return text


def manifest_copy(journal: Any) -> dict[str, str] | None:
    """The copy of ``store.json`` the journal keeps (its ``manifest`` event: ``text`` and
    ``sha256``), or ``None`` for a store created before the copy was kept."""
    events = journal.events("manifest")
    return events[-1].payload if events else None


def check_manifest_copy(directory: Path, journal: Any) -> None:
    """A ``StoreError`` naming ``store.json`` when its bytes differ from the journal's copy."""
    copy = manifest_copy(journal)
    if copy is None:
        return
    path = directory / MANIFEST
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != copy["sha256"]:
        raise StoreError(f"{path} was changed or damaged: it has SHA-256 {actual}, the journal recorded {copy['sha256']} "
                         "when the store was created (`editscope check --repair` writes it back from the journal's copy)")


class WriterLock:
    """An exclusive, non-blocking ``flock`` on ``directory/lock``; the kernel releases it when
    the process dies, so a killed writer never leaves the store locked."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreError(f"store {self.path.parent} is open in another process") from None
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def normalise_source(source: str | Path) -> str:
    """``"builtin"`` as is; a checkpoint path made absolute (it must exist)."""
    text = str(source)
    if text == BUILTIN:
        return text
    path = Path(text)
    if not path.exists():
        raise StoreError(f"model checkpoint not found: {path}")
    return str(path.resolve())

