"""Putting a shared model back exactly as it was after an editor has used it.

Editors change a model by swapping modules in (adapter layers) or by replacing parameters.
``ModelRestorePoint`` records the module tree, the parameter and buffer objects, the
``requires_grad`` flags and the train/eval modes, and puts all of them back. It does not
copy weights (a 7B model would be copied): an editor that writes into the base weights in
place must undo that itself, and the harness checks the outputs afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# Hooks are not restored: transformers installs its own output-capturing hooks lazily, on the
# first forward pass, and editors remove theirs in ``finally`` blocks.
_DICTS = ("_modules", "_parameters", "_buffers")


@dataclass
class _ModuleRecord:
    module: nn.Module
    dicts: dict[str, dict]
    training: bool


class ModelRestorePoint:
    """Record of ``model``'s structure; ``restore()`` puts it back (usable as a context manager)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._records = [
            _ModuleRecord(m, {name: dict(getattr(m, name)) for name in _DICTS}, m.training)
            for m in model.modules()
        ]
        self._requires_grad = [(p, p.requires_grad) for p in model.parameters()]
        self._versions = {name: p._version for name, p in model.named_parameters()}

    def restore(self) -> None:
        for rec in self._records:
            for name, saved in rec.dicts.items():
                current = getattr(rec.module, name)
                current.clear()
                current.update(saved)
            rec.module.training = rec.training
        for p, flag in self._requires_grad:
            p.requires_grad_(flag)
            p.grad = None

    def modified_in_place(self) -> list[str]:
        """Names of parameters whose data were written in place since the record (they may
        have been written back to their original values)."""
        return [name for name, p in self.model.named_parameters() if self._versions.get(name) != p._version]

    def __enter__(self) -> "ModelRestorePoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


@torch.no_grad()
def parameter_fingerprint(model: nn.Module) -> dict[str, float]:
    """A cheap summary (sum of absolute values, float64) of every parameter, for tests."""
    return {name: p.detach().double().abs().sum().item() for name, p in model.named_parameters()}
