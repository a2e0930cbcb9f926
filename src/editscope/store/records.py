"""What the journal holds, as plain records: edit statuses, event kinds, and the rows for edits,
their anchors, snapshots and events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

PENDING = "pending"
APPLIED = "applied"
REJECTED = "rejected"
REVERTED = "reverted"
ROLLED_BACK = "rolled_back"
STATUSES: tuple[str, ...] = (PENDING, APPLIED, REJECTED, REVERTED, ROLLED_BACK)

# migrate: the integrity chain added to an older journal; export_start: an export began (its
# staging folder, if a crash leaves it, is debris that ``check --repair`` and opening remove);
# repair: what ``check --repair`` did; manifest: the copy of store.json kept at init.
EVENT_KINDS: tuple[str, ...] = ("rollback", "revert", "audit", "recover", "export", "export_start",
                                "repair", "migrate", "manifest")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class AnchorRecord:
    """A locality anchor of an edit as stored: the image is referenced by its SHA-256."""

    prompt: str
    answer: str
    image_sha256: str | None = None


@dataclass(frozen=True)
class ExampleRecord:
    """A scope example of an edit as stored: its image by SHA-256 and its prompt. ``also``
    examples must follow the edit, ``never`` examples must keep the answer they had before it
    (journaled in the edit's ``result`` as ``never_before`` when it is applied)."""

    image_sha256: str
    prompt: str


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
    also: tuple[ExampleRecord, ...] = ()
    never: tuple[ExampleRecord, ...] = ()
    scope_rule: str | None = None  # what decided ``scope``: "stated", "tag T", "default" or "none"

    def scoping(self) -> str:
        """The ``scoping`` column: the rule and the examples, as JSON text."""
        return scoping_text(self.scope_rule, self.also, self.never)


def scoping_text(rule: str | None, also: Sequence[ExampleRecord], never: Sequence[ExampleRecord]) -> str:
    """The stored text of an edit's ``scoping`` column (canonical JSON: sorted keys)."""
    return json.dumps({"rule": rule, "also": [e.__dict__ for e in also], "never": [e.__dict__ for e in never]},
                      sort_keys=True)


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
    also: tuple[ExampleRecord, ...] = ()
    never: tuple[ExampleRecord, ...] = ()
    scope_rule: str | None = None  # None: journaled before scoping rules existed

    @property
    def never_before(self) -> tuple[str, ...] | None:
        """The answers of the ``never`` examples right before the edit was applied (``None``
        until it was)."""
        before = (self.result or {}).get("never_before")
        return tuple(before) if isinstance(before, list) else None

    def _befores(self) -> list[str | None]:
        """``never_before`` lined up with ``never`` (``None`` where there is none)."""
        before = list(self.never_before or ())
        return [before[i] if i < len(before) else None for i in range(len(self.never))]

    @property
    def has_examples(self) -> bool:
        return bool(self.also or self.never)

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
            "scope_rule": self.scope_rule,
            "also": [e.__dict__ for e in self.also],
            "never": [{**e.__dict__, "answer_before": before} for e, before in zip(self.never, self._befores())],
        }


def edit_record(row: tuple, tags: Sequence[str]) -> EditRecord:
    """An ``EditRecord`` from the journal's columns (id, created_at, updated_at, prompt, target,
    scope, image_sha256, rephrases, anchors, status, result, error, config_hash, scoping; JSON
    columns as stored text; a ``scoping`` of ``None``: a row written before it existed) and its
    tags."""
    scoping = json.loads(row[13]) if len(row) > 13 and row[13] is not None else {}
    return EditRecord(
        id=row[0], created_at=row[1], updated_at=row[2], prompt=row[3], target=row[4], scope=row[5],
        image_sha256=row[6], tags=tuple(tags), rephrases=tuple(json.loads(row[7])),
        anchors=tuple(AnchorRecord(**a) for a in json.loads(row[8])), status=row[9],
        result=json.loads(row[10]) if row[10] is not None else None, error=row[11], config_hash=row[12],
        also=tuple(ExampleRecord(**e) for e in scoping.get("also", ())),
        never=tuple(ExampleRecord(**e) for e in scoping.get("never", ())),
        scope_rule=scoping.get("rule"),
    )


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
