"""The baseline editors, one module each (FT-L, LoRA, GRACE and the unedited model). The
registry of every editor, baselines included, is ``editscope.editors.registry``."""

from __future__ import annotations

from typing import Any

from editscope.editors.baselines.ft import FineTune, FTConfig
from editscope.editors.baselines.grace import Grace, GraceConfig
from editscope.editors.baselines.lora import LoRA, LoRAConfig
from editscope.editors.baselines.none import NoEdit, NoEditConfig

_REGISTRY_NAMES = ("EDITORS", "EditorEntry", "build_editor", "make_config", "reference_size")


def __getattr__(name: str) -> Any:
    """The registry's names, also reachable from here (imported on use: the registry imports
    every editor, and the editors import ``baselines.common``)."""
    if name in _REGISTRY_NAMES:
        from editscope.editors import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FTConfig", "FineTune", "Grace", "GraceConfig", "LoRA", "LoRAConfig", "NoEdit", "NoEditConfig",
           *_REGISTRY_NAMES]
