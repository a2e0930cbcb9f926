"""What the journal holds, as plain records: edit statuses, event kinds, and the rows for edits,
their anchors, snapshots and events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

PENDING = "pending"
APPLIED = "applied"
REJECTED = "rejected"
REVERTED = "reverted"
ROLLED_BACK = "rolled_back"
STATUSES: tuple[str, ...] = (PENDING, APPLIED, REJECTED, REVERTED, ROLLED_BACK)

EVENT_KINDS: tuple[str, ...] = ("rollback", "revert", "audit", "recover", "export")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class AnchorRecord:
    """A locality anchor of an edit as stored: the image is referenced by its SHA-256."""

    prompt: str
    answer: str
    image_sha256: str | None = None


@dataclass(frozen=True)
class EditDraft:
    """What is known about an edit request before it is applied."""

    prompt: str
    target: str
    scope: str
    image_sha256: str | None
    tags: tuple[str, ...] = ()
    rephrases: tuple[str, ...] = ()
    anchors: tuple[AnchorRecord, ...] = ()
    config_hash: str = ""


@dataclass(frozen=True)
class EditRecord:
    """One row of the journal. ``result`` holds the editor's ``EditResult`` as plain data (loss
    before/after, active groups, gate values, wall time) once the edit is applied; ``error`` the
    reason when it was rejected."""

    id: int
    created_at: str
    updated_at: str
    prompt: str
    target: str
    scope: str
    image_sha256: str | None
    tags: tuple[str, ...]
    rephrases: tuple[str, ...]
    anchors: tuple[AnchorRecord, ...]
    status: str
    result: dict[str, Any] | None
    error: str | None
    config_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "prompt": self.prompt,
            "target": self.target,
            "scope": self.scope,
            "image_sha256": self.image_sha256,
            "tags": list(self.tags),
            "rephrases": list(self.rephrases),
            "anchors": [a.__dict__ for a in self.anchors],
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "config_hash": self.config_hash,
        }


@dataclass(frozen=True)
class SnapshotRecord:
    """A saved editor state. ``lineage`` lists the applied edit ids (in order) it contains."""

    id: int
    created_at: str
    name: str
    trigger: str  # "initial", "auto" or "manual"
    file: str  # relative to the store directory
    sha256: str
    lineage: tuple[int, ...]


@dataclass(frozen=True)
class EventRecord:
    id: int
    created_at: str
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
