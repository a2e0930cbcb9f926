"""The one registry of editors, by name.

``EDITORS`` maps a name to ``(editor class, config class)``; every editor is built with
:func:`build_editor`, and :func:`give_reference` (which it calls) is the one place that hands an
editor its reference set (ScopeEdit and M-ORE fold it into their preconditioners, ScopeMemory
centres its router on it). The bench, the
store and the cost benchmark all build editors here. ``scopememory``, ``scopeedit`` and
``more`` are the project's own editors (``editscope.editors.scopememory``,
``editscope.editors.scopeedit``); the others are baselines, one module each
(``editscope.editors.baselines``).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

from editscope.config import ScopeEditConfig
from editscope.editors.base import Editor
from editscope.editors.baselines.common import config_from_dict
from editscope.editors.baselines.ft import FineTune, FTConfig
from editscope.editors.baselines.grace import Grace, GraceConfig
from editscope.editors.baselines.lora import LoRA, LoRAConfig
from editscope.editors.baselines.none import NoEdit, NoEditConfig
from editscope.editors.scopeedit.core import MORE, ScopeEdit
from editscope.editors.scopememory import ScopeMemory, ScopeMemoryConfig
from editscope.types import Probe


class EditorEntry(NamedTuple):
    editor: type[Editor]
    config: type


EDITORS: dict[str, EditorEntry] = {
    "scopememory": EditorEntry(ScopeMemory, ScopeMemoryConfig),
    "scopeedit": EditorEntry(ScopeEdit, ScopeEditConfig),
    "more": EditorEntry(MORE, ScopeEditConfig),
    "lora": EditorEntry(LoRA, LoRAConfig),
    "ft": EditorEntry(FineTune, FTConfig),
    "grace": EditorEntry(Grace, GraceConfig),
    "none": EditorEntry(NoEdit, NoEditConfig),
}


def make_config(name: str, values: Mapping[str, Any] | None = None) -> Any:
    """The config of editor ``name`` from plain data (defaults for missing keys; unknown keys
    are an error)."""
    entry = _entry(name)
    if entry.config in (ScopeEditConfig, ScopeMemoryConfig):
        return entry.config.from_dict(dict(values or {}))
    return config_from_dict(entry.config, values or {})


def reference_size(config: Any) -> int:
    """How many reference probes an editor with ``config`` takes (0: none)."""
    if isinstance(config, ScopeEditConfig):
        return config.prior.size if config.prior is not None else 0
    if isinstance(config, ScopeMemoryConfig):
        return config.reference_size
    return 0


def give_reference(editor: Editor, reference: Sequence[Probe], progress: bool = False) -> None:
    """Hand ``editor`` its reference set, the one place that does it: ScopeMemory centres its
    router on it (``set_reference``), ScopeEdit and M-ORE fold it into their preconditioners at
    ``prior.weight`` (``fold_reference``). An editor whose configuration takes no reference set
    (:func:`reference_size` 0) is a ``ValueError``. :func:`build_editor` calls it, and so does the
    store for a new store's editor (``store.backend.DefaultBackend.prepare_editor``). No editor
    takes a reference set at construction."""
    config = editor.config  # type: ignore[attr-defined]
    if not reference_size(config):
        takes = "has no prior section (prior: null)" if isinstance(config, ScopeEditConfig) else "takes none"
        raise ValueError(f"a reference set was given but the {editor.name!r} configuration {takes}")
    if isinstance(editor, ScopeMemory):
        editor.set_reference(reference)
    else:
        editor.fold_reference(reference, config.prior.weight, progress=progress)  # type: ignore[attr-defined]


def build_editor(name: str, vlm: Any, config: Any = None, reference: Sequence[Probe] | None = None,
                 progress: bool = False) -> Editor:
    """A fresh editor ``name`` on ``vlm`` (the default config when ``config`` is None), given
    its reference set where its config takes one (:func:`give_reference`); on any error the
    editor is removed from ``vlm`` again."""
    entry = _entry(name)
    if config is not None and not isinstance(config, entry.config):
        raise TypeError(f"editor {name!r} takes a {entry.config.__name__}, got {type(config).__name__}")
    editor = entry.editor(vlm, config)
    if reference is not None:
        try:
            give_reference(editor, reference, progress=progress)
        except BaseException:
            editor.remove()
            raise
    return editor


def _entry(name: str) -> EditorEntry:
    if name not in EDITORS:
        raise ValueError(f"unknown editor {name!r}; available: {', '.join(EDITORS)}")
    return EDITORS[name]


__all__ = ["EDITORS", "EditorEntry", "build_editor", "give_reference", "make_config", "reference_size"]
