"""Editors compared by the benchmark, by name.

``EDITORS`` maps a name to ``(editor class, config class)``; every editor is built as
``cls(vlm, config)``. ``scopeedit`` and ``more`` are the project's own editors
(``editscope.editors.recursive``); the others are baselines, one module each.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from editscope.config import ScopeEditConfig
from editscope.editors.base import Editor
from editscope.editors.baselines.common import config_from_dict
from editscope.editors.baselines.ft import FineTune, FTConfig
from editscope.editors.baselines.grace import Grace, GraceConfig
from editscope.editors.baselines.lora import LoRA, LoRAConfig
from editscope.editors.baselines.none import NoEdit, NoEditConfig
from editscope.editors.recursive import MORE, ScopeEdit


class EditorEntry(NamedTuple):
    editor: type[Editor]
    config: type


EDITORS: dict[str, EditorEntry] = {
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
    if entry.config is ScopeEditConfig:
        return ScopeEditConfig.from_dict(dict(values or {}))
    return config_from_dict(entry.config, values or {})


def build_editor(name: str, vlm: Any, config: Any = None) -> Editor:
    """A fresh editor ``name`` on ``vlm`` (the default config when ``config`` is None)."""
    entry = _entry(name)
    if config is not None and not isinstance(config, entry.config):
        raise TypeError(f"editor {name!r} takes a {entry.config.__name__}, got {type(config).__name__}")
    return entry.editor(vlm, config)


def _entry(name: str) -> EditorEntry:
    if name not in EDITORS:
        raise ValueError(f"unknown editor {name!r}; available: {', '.join(EDITORS)}")
    return EDITORS[name]


__all__ = [
    "EDITORS", "EditorEntry", "FTConfig", "FineTune", "Grace", "GraceConfig", "LoRA", "LoRAConfig",
    "NoEdit", "NoEditConfig", "build_editor", "make_config",
]
