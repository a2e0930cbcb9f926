"""How a store gets its base model and builds its editor, and the base model's fingerprint.

``Backend`` is the seam between the store and the rest of the package: the default one uses
``editscope.models.load`` and the recursive editors; tests of the store logic pass a small
fake one, so that they need no model files.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import torch

from editscope.editors.base import Editor

EDITOR_NAMES: tuple[str, ...] = ("scopeedit", "more")


class Backend(Protocol):
    def load_model(self, source: str, device: str | None = None) -> Any:
        """The wrapped base model (``.model``: the Hugging Face model, ``.processor``) on
        ``device`` (``None``: where the loader puts it, the CPU)."""

    def default_config(self, editor_name: str, preset: str | None) -> dict[str, Any]:
        """The editor configuration (plain data) for ``preset`` (``None``: the defaults)."""

    def build_editor(self, vlm: Any, editor_name: str, config: dict[str, Any]) -> Editor:
        """A fresh editor on ``vlm`` (no edit applied)."""

    def prepare_editor(self, editor: Editor, source: str, config: dict[str, Any]) -> None:
        """One-time set-up of a new store's editor before its initial snapshot (the reference
        prior of a configuration with ``reference_weight > 0``)."""


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


class DefaultBackend:
    """Models through ``editscope.models.load``, editors ``ScopeEdit`` / ``MORE`` configured by
    a ``ScopeEditConfig`` (``editscope.config``)."""

    def load_model(self, source: str, device: str | None = None) -> Any:
        from editscope import models

        return models.load(source, device=device)

    def default_config(self, editor_name: str, preset: str | None) -> dict[str, Any]:
        from editscope.config import ScopeEditConfig, load_preset

        _check_editor_name(editor_name)
        config = load_preset(preset) if preset else ScopeEditConfig()
        return config.to_dict()

    def build_editor(self, vlm: Any, editor_name: str, config: dict[str, Any]) -> Editor:
        from editscope.config import ScopeEditConfig
        from editscope.editors.recursive import MORE, ScopeEdit

        _check_editor_name(editor_name)
        editor_type = ScopeEdit if editor_name == "scopeedit" else MORE
        return editor_type(vlm, ScopeEditConfig.from_dict(config))

    def prepare_editor(self, editor: Editor, source: str, config: dict[str, Any]) -> None:
        from editscope.config import ScopeEditConfig
        from editscope.editors.reference import load_reference

        cfg = ScopeEditConfig.from_dict(config)
        if cfg.reference_weight > 0:
            probes = load_reference(None, source, cfg.reference_size)
            editor.fold_reference(probes, cfg.reference_weight)  # type: ignore[attr-defined]


def _check_editor_name(name: str) -> None:
    if name not in EDITOR_NAMES:
        raise ValueError(f"unknown editor {name!r}; expected one of {EDITOR_NAMES}")
