"""``lora``: sequential LoRA fine-tuning of the sites ScopeEdit edits, without preconditioning.

Every site ``y = W x`` becomes ``y = W x + s B A x`` (``s = alpha / rank``, ``A`` drawn from a
seeded generator, ``B`` zero, so the model starts unchanged). Each edit runs a few Adam steps
on the target loss over all ``A`` and ``B``; the adapters accumulate over the stream.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from editscope.editors.base import Editor
from editscope.editors.baselines.common import check_positive, optimise, swap_in
from editscope.editors.transaction import transactional_edit
from editscope.types import EditRequest, EditResult


@dataclass(frozen=True)
class LoRAConfig:
    """``n_last_layers`` and ``include_projector`` choose the sites as ScopeEdit does (the
    bench command copies them from the ScopeEdit preset)."""

    rank: int = 8
    alpha: float = 16.0
    lr: float = 5e-3
    steps: int = 10
    n_last_layers: int = 2
    include_projector: bool = True
    stop_loss: float = 1e-2
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive(self, "alpha", "lr")
        check_positive(self, "stop_loss", allow_zero=True)
        for name in ("rank", "steps", "n_last_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LoRAConfig.{name} must be a positive integer, got {value!r}")


class LoRALinear(nn.Module):
    """``base_layer`` plus ``scaling * B A x``: ``A`` (rank, d_in), ``B`` (d_out, rank), float32."""

    def __init__(self, base_layer: nn.Linear, rank: int, scaling: float, generator: torch.Generator) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.scaling = float(scaling)
        d_out, d_in = base_layer.weight.shape
        device = base_layer.weight.device
        a = torch.randn(rank, d_in, generator=generator) / math.sqrt(d_in)
        self.lora_A = nn.Parameter(a.to(device), requires_grad=False)
        self.lora_B = nn.Parameter(torch.zeros(d_out, rank, device=device), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        delta = (x.to(self.lora_A.dtype) @ self.lora_A.T) @ self.lora_B.T
        return out + (self.scaling * delta).to(out.dtype)


class LoRA(Editor):
    name = "lora"

    def __init__(self, vlm: Any, config: LoRAConfig | None = None) -> None:
        super().__init__(vlm)
        self.config = config if config is not None else LoRAConfig()
        cfg = self.config
        vlm.model.requires_grad_(False)
        vlm.model.eval()
        self.groups = vlm.site_paths(cfg.n_last_layers, cfg.include_projector)
        generator = torch.Generator().manual_seed(cfg.seed)
        self.sites: dict[str, LoRALinear] = {}
        for paths in self.groups.values():
            for path in paths:
                self.sites[path] = LoRALinear(vlm.model.get_submodule(path), cfg.rank, cfg.alpha / cfg.rank, generator)
        for path, site in self.sites.items():
            swap_in(vlm.model, path, site)

    def _params(self) -> list[nn.Parameter]:
        return [p for s in self.sites.values() for p in (s.lora_A, s.lora_B)]

    def edit(self, request: EditRequest) -> EditResult:
        cfg = self.config
        return transactional_edit(self, request, lambda inputs: optimise(
            self.vlm, inputs, self._params(), cfg.lr, cfg.steps, cfg.stop_loss), groups=tuple(self.groups))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{path}.{name}": getattr(site, name).detach().clone()
                for path, site in self.sites.items() for name in ("lora_A", "lora_B")}

    def state_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self._params())

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = {f"{p}.{n}": getattr(s, n) for p, s in self.sites.items() for n in ("lora_A", "lora_B")}
        if set(state) != set(expected):
            missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
            raise ValueError(f"lora state does not match: missing {missing[:5]}, unexpected {extra[:5]}")
        for key, target in expected.items():
            if state[key].shape != target.shape:
                raise ValueError(f"lora state {key}: shape {tuple(state[key].shape)} != {tuple(target.shape)}")
        with torch.no_grad():
            for key, target in expected.items():
                target.copy_(state[key])

    def config_dict(self) -> dict[str, Any]:
        return {"editor": self.name, "config": asdict(self.config)}

    def remove(self) -> nn.Module:
        for path, site in self.sites.items():
            self.vlm.model.set_submodule(path, site.base_layer)
        self.sites = {}
        return self.vlm.model
