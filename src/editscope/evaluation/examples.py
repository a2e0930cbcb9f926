"""Scope examples of benchmark records (``editscope bench --scope-examples N``).

A record states its edit's scope by example in two optional lists: ``scope_also`` (inputs that
must follow the edit) and ``scope_never`` (inputs that must keep their current answers). Each
item is an image path (asked with the edit's own prompt) or an object ``{"image": PATH,
"prompt": QUESTION}`` (the question is wrapped like the record's other questions). The world's
generated splits carry them when the bench asks for them (:mod:`editscope.world.edits`);
MMEdit and VLKEB files carry none unless a user adds them.

The examples are only read when ``N > 0``: then every record must carry at least ``N`` of
each kind, and the first ``N`` of each go into the case's :class:`~editscope.types.EditRequest`
(``also``/``never``). With ``N = 0`` the fields are ignored and the requests are exactly what
they are without them. Examples are never scored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from editscope.types import ScopeExample

if TYPE_CHECKING:
    from editscope.evaluation.data import _RecordReader

EXAMPLE_KEYS: tuple[tuple[str, str], ...] = (("also", "scope_also"), ("never", "scope_never"))


def check_scope_examples(n: Any) -> int:
    """``n`` as a number of scope examples per kind, or ``ValueError``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"--scope-examples must be an integer >= 0, got {n!r}")
    return n


def _example(r: "_RecordReader", key: str, j: int, item: Any, prompt: str, template: str) -> ScopeExample:
    """One item of ``r.record[key]`` as an example (its image resolved and checked like the
    record's own images)."""
    where = f"{key}[{j}]"
    if isinstance(item, str) and item.strip():
        name, question = item.strip(), None
    elif isinstance(item, dict) and isinstance(item.get("image"), str) and item["image"].strip():
        name, question = item["image"].strip(), item.get("prompt")
        if question is not None and (not isinstance(question, str) or not question.strip()):
            raise r.error(f"{where}.prompt", "expected a non-empty string")
    else:
        raise r.error(where, "expected an image path or an object with 'image' (and optional 'prompt')")
    image = r.resolve_image(where, name)
    return ScopeExample(image, prompt if question is None else template.format(question.strip()))


def read_scope_examples(r: "_RecordReader", n: int, prompt: str,
                        template: str) -> dict[str, tuple[ScopeExample, ...]]:
    """The first ``n`` ``also`` and ``never`` examples of the record (``{}`` when ``n`` is 0).
    ``prompt`` is the edit's prompt (for items without their own); ``template`` wraps an
    item's own question. A record with fewer than ``n`` of a kind is a ``DataError``."""
    if check_scope_examples(n) == 0:
        return {}
    out: dict[str, tuple[ScopeExample, ...]] = {}
    for name, key in EXAMPLE_KEYS:
        items = r.record.get(key)
        if items is None:
            items = []
        if not isinstance(items, list):
            raise r.error(key, f"expected a list of scope examples, got {type(items).__name__}")
        if len(items) < n:
            raise r.error(key, f"--scope-examples {n} needs at least {n} {name} examples per record, "
                          f"this record has {len(items)} (records carry scope examples in 'scope_also' "
                          "and 'scope_never' lists; the world's generated splits have them, "
                          "MMEdit and VLKEB files only when added; see docs/evaluation.md)")
        out[name] = tuple(_example(r, key, j, item, prompt, template) for j, item in enumerate(items[:n]))
    return out
