"""``ft``: FT-L style sequential fine-tuning of one MLP layer's output projection.

Each edit runs a few Adam steps on the target loss over a weight delta ``D`` of one linear
(``y = (W + D) x + b``), with ``D`` kept inside an L-infinity ball around the original weights
(the FT-L norm constraint). The deltas accumulate over the stream. The base weights are never
written: the editor's state is ``D``, and taking the wrapper out restores the base model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from editscope.editors.base import Editor
from editscope.editors.baselines.common import check_positive, optimise, wrap_layer_output
from editscope.editors.transaction import transactional_edit
from editscope.types import EditRequest, EditResult


@dataclass(frozen=True)
class FTConfig:
    """``layer``: decoder layer whose MLP output linear is tuned (negative: from the end).
    ``norm_constraint``: bound on every entry of the accumulated delta (``0`` = none).
    ``stop_loss``: stop an edit's steps once the target loss is below this."""

    layer: int = -2
    lr: float = 5e-3
    steps: int = 10
    norm_constraint: float = 0.0
    stop_loss: float = 1e-2

    def __post_init__(self) -> None:
        check_positive(self, "lr")
        check_positive(self, "norm_constraint", "stop_loss", allow_zero=True)
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"FTConfig.steps must be a positive integer, got {self.steps!r}")


class DeltaLinear(nn.Module):
    """``base_layer`` with a trainable float32 weight delta ``D`` (d_out, d_in), zero at first."""

    def __init__(self, base_layer: nn.Linear) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.delta = nn.Parameter(torch.zeros_like(base_layer.weight, dtype=torch.float32), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.base_layer.weight + self.delta.to(self.base_layer.weight.dtype)
        return F.linear(x, weight, self.base_layer.bias)


class FineTune(Editor):
    name = "ft"

    def __init__(self, vlm: Any, config: FTConfig | None = None) -> None:
        super().__init__(vlm)
        self.config = config if config is not None else FTConfig()
        self.group, self.path, self.site = wrap_layer_output(vlm, self.config.layer, DeltaLinear)

    def _clamp(self) -> None:
        c = self.config.norm_constraint
        if c > 0:
            self.site.delta.clamp_(-c, c)

    def edit(self, request: EditRequest) -> EditResult:
        cfg = self.config
        return transactional_edit(self, request, lambda inputs: optimise(
            self.vlm, inputs, [self.site.delta], cfg.lr, cfg.steps, cfg.stop_loss, self._clamp), groups=(self.group,))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{self.path}.delta": self.site.delta.detach().clone()}

    def state_bytes(self) -> int:
        return self.site.delta.numel() * self.site.delta.element_size()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        key = f"{self.path}.delta"
        if set(state) != {key}:
            raise ValueError(f"ft state must hold exactly {key!r}, got {sorted(state)[:5]}")
        if state[key].shape != self.site.delta.shape:
            raise ValueError(f"ft state {key}: shape {tuple(state[key].shape)} != {tuple(self.site.delta.shape)}")
        with torch.no_grad():
            self.site.delta.copy_(state[key])

    def config_dict(self) -> dict[str, Any]:
        return {"editor": self.name, "config": asdict(self.config), "site": self.path}

    def remove(self) -> nn.Module:
        """Put the original linear back: the model is the base model again."""
        self.vlm.model.set_submodule(self.path, self.site.base_layer)
        return self.vlm.model
