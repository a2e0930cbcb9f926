"""An edit's scope in the store: its journal row with the store's scoping rules applied and its
scope examples checked, and the answers its ``never`` examples had right before it was applied
(journaled in its ``result`` as ``never_before``; the audit compares against them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from editscope.editors.base import Editor
from editscope.store.images import ImageStore
from editscope.store.layout import StoreError
from editscope.store.records import EditDraft, EditRecord
from editscope.store.replay import config_hash, draft_for
from editscope.store.rules import load_rules
from editscope.types import EditRequest

ANSWER_TOKENS = 16  # the greedy answer a never example must keep (as ``query`` gives it)


class ExamplesUnsupported(StoreError, ValueError):
    """A request with scope examples for a store whose editor cannot use them (nothing is
    journaled)."""


def scoped_draft(editor: Editor, request: EditRequest, tags: tuple[str, ...], rephrases: tuple[str, ...],
                 images: ImageStore, directory: Path) -> EditDraft:
    """``draft_for`` with the store's rules (``scope_rules.yaml`` in ``directory``, read now);
    a request with scope examples for an editor that cannot use them is a ``StoreError``.
    Nothing is journaled when this raises."""
    if (request.also or request.never) and not getattr(editor, "uses_examples", False):
        raise ExamplesUnsupported(f"the store's {editor.name} editor does not take scope examples (also/never); "
                         "only scopememory does: drop them or use a scopememory store")
    return draft_for(request, tags, rephrases, images, config_hash(editor), load_rules(directory))


def never_answers(editor: Editor, record: EditRecord, images: ImageStore) -> dict[str, Any]:
    """``{"never_before": [answers]}``: the current state's greedy answer to each ``never``
    example of ``record`` (empty when it has none), to journal with its result."""
    if not record.never:
        return {}
    return {"never_before": [editor.answer(images.get(e.image_sha256), e.prompt, max_new_tokens=ANSWER_TOKENS)
                             for e in record.never]}
