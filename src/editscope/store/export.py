"""Writing a store's current state out as a deployable artifact.

Both writers build the artifact in a temporary directory beside ``out`` and move it into place
at the end, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from editscope.editors.base import Editor
from editscope.store.journal import EditRecord, utc_now


def export_manifest(
    store_manifest: dict[str, Any], store_dir: Path, applied: Sequence[EditRecord], merged: bool
) -> dict[str, Any]:
    """What an exported artifact contains: the base model, the editor and the applied edits."""
    return {
        "format": "editscope-export/1",
        "merged": merged,
        "exported_at": utc_now(),
        "store": str(store_dir.resolve()),
        "base_model": store_manifest["base_model"],
        "editor": store_manifest["editor"],
        "edits": [
            {
                "id": r.id,
                "created_at": r.created_at,
                "prompt": r.prompt,
                "target": r.target,
                "scope": r.scope,
                "scope_rule": r.scope_rule,
                "image_sha256": r.image_sha256,
                "tags": list(r.tags),
                "also": [e.__dict__ for e in r.also],
                "never": [e.__dict__ for e in r.never],
            }
            for r in applied
        ],
    }


def _build_then_move(out: Path, fill: Callable[[Path], None]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        fill(staging)
        if out.exists():
            out.rmdir()  # checked empty by the caller
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def export_merged(editor: Editor, vlm: Any, out: Path, manifest: dict[str, Any]) -> None:
    """``editor.save_pretrained`` (by default ``editor.merge()`` saved with ``save_pretrained``;
    for ScopeMemory a routed checkpoint loaded with ``trust_remote_code=True``), the processor
    beside it, and the manifest: loadable with plain transformers."""

    def fill(directory: Path) -> None:
        editor.save_pretrained(directory, vlm.processor)
        _write_manifest(directory, manifest)

    _build_then_move(out, fill)


def export_adapter(editor: Editor, vlm: Any, out: Path, manifest: dict[str, Any]) -> None:
    """The editor state and configuration as ``editor.save`` writes them (loadable with
    ``editor.load(out)`` on the same base model), and the manifest; the base model is not
    copied."""

    def fill(directory: Path) -> None:
        editor.save(directory)
        _write_manifest(directory, manifest)

    _build_then_move(out, fill)
