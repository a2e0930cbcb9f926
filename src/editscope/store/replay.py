"""Turning journal rows back into editor requests, and editor results into journal data.

Replay is deterministic because a request is rebuilt only from what the journal and the image
store hold: the stored image file (never the caller's original path), prompt, target, scope and
anchors, exactly as when the edit was first applied.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from editscope.editors.base import Editor
from editscope.store.images import ImageStore
from editscope.store.journal import EditRecord
from editscope.types import EditRequest, EditResult, Probe


def config_hash(editor: Editor) -> str:
    """SHA-256 (first 16 hex digits) of the editor's name and configuration."""
    text = json.dumps({"editor": editor.name, "config": editor.config_dict()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def request_for(record: EditRecord, images: ImageStore) -> EditRequest:
    """The ``EditRequest`` of a journal row, with images read from the image store (checked
    against their hash: a missing or damaged image raises ``ImageStoreError``)."""
    image = images.get(record.image_sha256) if record.image_sha256 else None
    anchors = tuple(
        Probe(a.prompt, a.answer, images.get(a.image_sha256) if a.image_sha256 else None)
        for a in record.anchors
    )
    return EditRequest(
        prompt=record.prompt, target=record.target, image=image, scope=record.scope, anchors=anchors
    )


def result_to_dict(result: EditResult) -> dict[str, Any]:
    """An ``EditResult`` as JSON-ready data (loss, active groups, gate values, wall time,
    steps, and the earlier facts rehearsed after it): every field of ``EditResult``."""
    return {
        "editor_edit_id": result.edit_id,
        "loss_before": float(result.loss_before),
        "loss_after": float(result.loss_after),
        "active_groups": list(result.active_groups),
        "gates": {group: asdict(gate) for group, gate in result.gates.items()},
        "wall_time_s": float(result.wall_time_s),
        "steps": int(result.steps),
        "rehearsed": int(result.rehearsed),
    }
