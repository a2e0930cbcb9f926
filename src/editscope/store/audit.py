"""Auditing the applied edits against the current editor state.

Each applied edit is re-scored on its own probe (image, prompt, target) and on its stored
rephrases (same image and target, another wording). An edit *holds* when every target token is
the model's top-1 prediction on its own probe. An edit is *superseded* when a later applied
edit has the same prompt and image; a superseded edit is reported as such, not as a failure.

An edit with scope examples is also checked for its scope: each ``also`` example must follow
it (the same verdict as its own probe: every target token top-1), and each ``never`` example
must still give the greedy answer it gave right before the edit. Its scope *holds* when all
of them do (``scope_holds``: ``None`` for an edit without examples, or a superseded one). Each
entry names the rule that decided its scope (``scope_rule``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from editscope.editors.base import Editor
from editscope.store.journal import EditRecord
from editscope.store.scoping import ANSWER_TOKENS


@dataclass(frozen=True)
class ProbeCheck:
    prompt: str
    token_accuracy: float
    mean_logprob: float

    @property
    def holds(self) -> bool:
        return self.token_accuracy >= 1.0


@dataclass(frozen=True)
class ExampleCheck:
    """One scope example re-checked: an ``also`` example by its score on the edit's target, a
    ``never`` example by its answer now against ``before`` (its answer right before the edit;
    ``None`` if the journal has none)."""

    kind: str  # "also" or "never"
    image_sha256: str
    prompt: str
    holds: bool
    token_accuracy: float | None = None
    before: str | None = None
    now: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    edit_id: int
    prompt: str
    target: str
    image_sha256: str | None
    own: ProbeCheck
    rephrases: tuple[ProbeCheck, ...]
    superseded_by: int | None
    scope: str | None = None
    scope_rule: str | None = None
    examples: tuple[ExampleCheck, ...] = ()

    @property
    def holds(self) -> bool:
        return self.own.holds

    @property
    def scope_holds(self) -> bool | None:
        """Whether every scope example still behaves (``None``: none checked)."""
        return all(e.holds for e in self.examples) if self.examples else None


@dataclass(frozen=True)
class AuditReport:
    """``failing``: applied edits, not superseded, whose own probe no longer holds;
    ``superseded``: applied edits overridden by a later edit of the same prompt and image."""

    state: tuple[int, ...]
    entries: tuple[AuditEntry, ...]
    audit_id: int | None = None
    created_at: str | None = None

    @property
    def failing(self) -> list[int]:
        return [e.edit_id for e in self.entries if e.superseded_by is None and not e.holds]

    @property
    def superseded(self) -> list[int]:
        return [e.edit_id for e in self.entries if e.superseded_by is not None]

    @property
    def scope_broken(self) -> list[int]:
        """Live edits whose scope no longer holds: an ``also`` example that does not follow, or
        a ``never`` example whose answer changed."""
        return [e.edit_id for e in self.entries if e.scope_holds is False]

    @property
    def holding(self) -> list[int]:
        return [e.edit_id for e in self.entries if e.superseded_by is None and e.holds]

    def entry(self, edit_id: int) -> AuditEntry:
        for entry in self.entries:
            if entry.edit_id == edit_id:
                return entry
        raise KeyError(f"edit {edit_id} is not in this audit (audited: {list(self.state)})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "audit_id": self.audit_id,
            "created_at": self.created_at,
            "state": list(self.state),
            "failing": self.failing,
            "superseded": self.superseded,
            "holding": self.holding,
            "scope_broken": self.scope_broken,
            "entries": [
                {**asdict(e), "holds": e.holds, "scope_holds": e.scope_holds,
                 "rephrases": [asdict(r) | {"holds": r.holds} for r in e.rephrases]}
                for e in self.entries
            ],
        }


def _check(editor: Editor, image: Path | None, prompt: str, target: str) -> ProbeCheck:
    score = editor.score(image, prompt, target)
    return ProbeCheck(prompt, float(score.token_accuracy), float(score.mean_logprob))


def check_own(editor: Editor, record: EditRecord, image_path: Callable[[str | None], Path | None]) -> ProbeCheck:
    """The audit's check of one edit on its own probe (image, prompt, target): it *holds* when
    every target token is the model's top-1 prediction. The CLI runs it right after an edit."""
    return _check(editor, image_path(record.image_sha256), record.prompt, record.target)


def check_examples(editor: Editor, record: EditRecord,
                   image_path: Callable[[str | None], Path | None]) -> tuple[ExampleCheck, ...]:
    """Re-check the scope examples of ``record`` against the current state (see the module
    docstring); a ``never`` example without a journaled answer before the edit fails."""
    checks = []
    for example in record.also:
        probe = _check(editor, image_path(example.image_sha256), example.prompt, record.target)
        checks.append(ExampleCheck("also", example.image_sha256, example.prompt, probe.holds, probe.token_accuracy))
    before = record.never_before or ()
    for i, example in enumerate(record.never):
        now = editor.answer(image_path(example.image_sha256), example.prompt, max_new_tokens=ANSWER_TOKENS)
        then = before[i] if i < len(before) else None
        checks.append(ExampleCheck("never", example.image_sha256, example.prompt, then is not None and now == then,
                                   before=then, now=now))
    return tuple(checks)


def run_audit(
    editor: Editor,
    applied: Sequence[EditRecord],
    image_path: Callable[[str | None], Path | None],
) -> AuditReport:
    """Score every record of ``applied`` (the edits in effect, in order) with ``editor``."""
    latest: dict[tuple[str, str | None], int] = {}
    for record in applied:
        latest[(record.prompt, record.image_sha256)] = record.id
    entries = []
    for record in applied:
        image = image_path(record.image_sha256)
        last = latest[(record.prompt, record.image_sha256)]
        superseded = last if last != record.id else None
        entries.append(
            AuditEntry(
                edit_id=record.id,
                prompt=record.prompt,
                target=record.target,
                image_sha256=record.image_sha256,
                own=check_own(editor, record, lambda _sha: image),
                rephrases=tuple(_check(editor, image, p, record.target) for p in record.rephrases),
                superseded_by=superseded,
                scope=record.scope,
                scope_rule=record.scope_rule,
                examples=() if superseded is not None else check_examples(editor, record, image_path),
            )
        )
    return AuditReport(state=tuple(r.id for r in applied), entries=tuple(entries))
