"""How a store gets its base model and builds its editor, and the base model's fingerprint.

``Backend`` is the seam between the store and the rest of the package: the default one uses
``editscope.models.load`` and the one editor registry (``editscope.editors.registry``); tests
of the store logic pass a small fake one, so that they need no model files.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Protocol

import torch

from editscope.editors.base import Editor

log = logging.getLogger(__name__)

# The editors a store can hold: the project's own editors, whose state is exactly reproducible
# by replaying the journal (the baselines are built and compared by ``bench``, not stored).
EDITOR_NAMES: tuple[str, ...] = ("scopememory", "scopeedit", "more")


class Backend(Protocol):
    def load_model(self, source: str, device: str | None = None) -> Any:
        """The wrapped base model (``.model``: the Hugging Face model, ``.processor``) on
        ``device`` (``None``: where the loader puts it, the CPU)."""

    def default_config(self, editor_name: str, preset: str | None) -> dict[str, Any]:
        """The editor configuration (plain data) for ``preset`` (``None``: the defaults)."""

    def build_editor(self, vlm: Any, editor_name: str, config: dict[str, Any]) -> Editor:
        """A fresh editor on ``vlm`` (no edit applied)."""

    def prepare_editor(self, editor: Editor, source: str, config: dict[str, Any],
                       reference: str | None = None) -> None:
        """One-time set-up of a new store's editor before its initial snapshot (its reference
        set, where its configuration takes one: from the ``reference`` JSON file, else from
        the model's world), so that the initial snapshot holds it."""


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and raw bytes of ``model``'s state-dict tensors,
    in name order. Hashes the tensors' memory in place (no copy for contiguous CPU tensors)."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        if tensor.numel() == 0:
            continue
        flat = tensor.to("cpu").contiguous().reshape(-1).view(torch.uint8)
        digest.update(memoryview(flat.numpy()))
    return "sha256:" + digest.hexdigest()


def editor_config(editor_name: str, preset: str | None) -> Any:
    """The configuration object of store editor ``editor_name`` for ``preset``.

    ``preset`` is ``None`` (the editor's defaults), a YAML file (read as the editor's own
    config type), or a shipped preset name. Preset names name models (``builtin``, ``tiny``,
    ``llava-1.5-7b``, ...), and the two preset families need not cover the same models:
    ScopeEdit/M-ORE read ``editscope/presets/NAME.yaml``, ScopeMemory
    ``editscope/presets/scopememory/NAME.yaml``. A name shipped for one family only gives the
    other family's defaults (with a logged note), as ``bench`` does for a model without a
    ScopeMemory preset; a name shipped for neither is an error (a typo must not silently
    become the defaults)."""
    from editscope.config import ScopeEditConfig, load_preset, preset_names
    from editscope.editors.scopememory import ScopeMemoryConfig, load_memory_preset, memory_preset_names

    _check_editor_name(editor_name)
    memory = editor_name == "scopememory"
    if preset is None:
        return ScopeMemoryConfig() if memory else ScopeEditConfig()
    if Path(preset).suffix in (".yaml", ".yml", ".json") and Path(preset).is_file():
        return ScopeMemoryConfig.from_file(preset) if memory else ScopeEditConfig.from_file(preset)
    own, other = (memory_preset_names(), preset_names()) if memory else (preset_names(), memory_preset_names())
    if preset in own:
        return load_memory_preset(preset) if memory else load_preset(preset)
    if preset in other:
        log.info("preset %r has no %s section: %s uses its defaults", preset,
                 "ScopeMemory" if memory else "ScopeEdit", editor_name)
        return ScopeMemoryConfig() if memory else ScopeEditConfig()
    raise ValueError(f"unknown preset {preset!r} for editor {editor_name!r}; available: {', '.join(own)} "
                     "(or a YAML file)")


class DefaultBackend:
    """Models through ``editscope.models.load``; editors (``EDITOR_NAMES``) through
    ``editscope.editors.registry``, configured by ``editor_config``."""

    def load_model(self, source: str, device: str | None = None) -> Any:
        from editscope import models

        return models.load(source, device=device)

    def default_config(self, editor_name: str, preset: str | None) -> dict[str, Any]:
        return editor_config(editor_name, preset).to_dict()

    def build_editor(self, vlm: Any, editor_name: str, config: dict[str, Any]) -> Editor:
        from editscope.editors import registry

        _check_editor_name(editor_name)
        # No reference set here: a reopened store loads its snapshots, which hold the folded
        # prior (ScopeEdit) or the router centres (ScopeMemory); a new one gets it in
        # prepare_editor.
        return registry.build_editor(editor_name, vlm, registry.make_config(editor_name, config))

    def prepare_editor(self, editor: Editor, source: str, config: dict[str, Any],
                       reference: str | None = None) -> None:
        from editscope.editors.reference import load_reference
        from editscope.editors.registry import give_reference, make_config, reference_size

        size = reference_size(make_config(editor.name, config))
        if size:
            give_reference(editor, load_reference(reference, source, size))


def _check_editor_name(name: str) -> None:
    if name not in EDITOR_NAMES:
        raise ValueError(f"unknown store editor {name!r}; expected one of {', '.join(EDITOR_NAMES)}")
