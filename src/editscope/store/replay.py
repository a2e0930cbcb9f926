"""Turning journal rows back into editor requests (editor results become journal data through
``EditResult.to_dict``).

Replay is deterministic because a request is rebuilt only from what the journal and the image
store hold: the stored image file (never the caller's original path), prompt, target, scope,
anchors and scope examples (``also``/``never``), exactly as when the edit was first applied.
The scope is the one journaled (the stated one, or what the store's rules resolved then).
"""

from __future__ import annotations

import hashlib
import json

from editscope.editors.base import Editor
from editscope.store.images import ImageStore, ImageStoreError
from editscope.store.journal import AnchorRecord, EditDraft, EditRecord
from editscope.store.layout import StoreError
from editscope.store.records import ExampleRecord
from editscope.store.rules import ScopeRules
from editscope.types import EditRequest, Probe, ScopeExample


def config_hash(editor: Editor) -> str:
    """SHA-256 (first 16 hex digits) of the editor's name and configuration."""
    text = json.dumps({"editor": editor.name, "config": editor.config_dict()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_text(what: str, text: object, consequence: str = "it cannot be journaled") -> None:
    """``text`` is a non-empty string of valid Unicode, else a ``StoreError`` naming ``what``."""
    if not isinstance(text, str) or not text.strip():
        raise StoreError(f"{what} must be a non-empty string, got {text!r}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise StoreError(f"{what} {text!r} is not valid Unicode ({error.reason}: "
                         f"U+{ord(text[error.start]):04X}); {consequence}") from None


def draft_for(request: EditRequest, tags: tuple[str, ...], rephrases: tuple[str, ...], images: ImageStore,
              config: str, rules: ScopeRules | None = None) -> EditDraft:
    """The journal row of ``request``: every text checked (non-empty, valid Unicode), every
    image read (before anything is written), then the images stored. A ``StoreError`` names
    what is wrong (a scope example by its kind and number). The scope is the stated one, else
    what ``rules`` decide for ``tags`` (a ``ScopeRuleConflict`` when two of them disagree)."""
    if request.fact_id is not None:
        # The journal keeps no fact_id, so a replay would identify the fact differently.
        raise StoreError("store edits cannot carry a fact_id (the journal does not record it); "
                         "a fact is its image and prompt")
    examples = [(f"{kind} example {i}", e) for kind in ("also", "never")
                for i, e in enumerate(getattr(request, kind), start=1)]
    texts = [("prompt", request.prompt), ("target", request.target), *(("tag", t) for t in tags),
             *(("rephrase", r) for r in rephrases), *(("anchor prompt", a.prompt) for a in request.anchors),
             *(("anchor answer", a.answer) for a in request.anchors),
             *((f"{name} prompt", e.prompt) for name, e in examples)]
    for name, text in texts:
        check_text(f"the edit's {name}", text)
    scope, rule = (rules or ScopeRules()).resolve(request.scope, tags)
    try:
        for image in (request.image, *(a.image for a in request.anchors)):
            if image is not None:
                images.hash_of(image)  # every image readable before anything is written
        for name, example in examples:
            _example_readable(images, name, example)
        image_sha = images.put(request.image) if request.image is not None else None
        anchors = tuple(AnchorRecord(a.prompt, a.answer, images.put(a.image) if a.image is not None else None)
                        for a in request.anchors)
        also = tuple(ExampleRecord(images.put(e.image), e.prompt) for e in request.also)
        never = tuple(ExampleRecord(images.put(e.image), e.prompt) for e in request.never)
    except ImageStoreError as error:
        raise StoreError(str(error)) from error
    return EditDraft(prompt=request.prompt, target=request.target, scope=scope, image_sha256=image_sha,
                     tags=tags, rephrases=rephrases, anchors=anchors, config_hash=config,
                     also=also, never=never, scope_rule=rule)


def _example_readable(images: ImageStore, name: str, example: ScopeExample) -> None:
    """Raise an ``ImageStoreError`` naming the example when its image cannot be read."""
    try:
        images.hash_of(example.image)
    except ImageStoreError as error:
        raise ImageStoreError(f"{name}: {error}") from None


def request_for(record: EditRecord, images: ImageStore) -> EditRequest:
    """The ``EditRequest`` of a journal row, with images read from the image store (checked
    against their hash: a missing or damaged image raises ``ImageStoreError``)."""
    image = images.get(record.image_sha256) if record.image_sha256 else None
    anchors = tuple(
        Probe(a.prompt, a.answer, images.get(a.image_sha256) if a.image_sha256 else None)
        for a in record.anchors
    )
    also = tuple(ScopeExample(images.get(e.image_sha256), e.prompt) for e in record.also)
    never = tuple(ScopeExample(images.get(e.image_sha256), e.prompt) for e in record.never)
    return EditRequest(
        prompt=record.prompt, target=record.target, image=image, scope=record.scope, anchors=anchors,
        also=also, never=never,
    )

