"""An edit site: a frozen linear layer plus two low-rank, preconditioned branches.

``y = W x + s (B_l A_l x + B_g A_g x)`` with frozen orthonormal ``A`` bases, ``B`` matrices
that start at zero and preconditioners ``P`` maintained by Sherman–Morrison recursions.
The module owns its state as registered parameters and buffers; ``forward`` is pure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from editscope.core.linalg import orthonormal_bases

STATE_NAMES = ("B_local", "B_shared", "P_local", "P_shared")


class EditSite(nn.Module):
    """Wraps ``base_layer`` (an ``nn.Linear`` of any dtype); the editor's state is float32 and
    lives on the base layer's device.

    Shapes: ``A_local`` (r_l, d_in), ``A_shared`` (r_g, d_in), ``B_local`` (d_out, r_l),
    ``B_shared`` (d_out, r_g), ``P_local`` (r_l, r_l), ``P_shared`` (r_g, r_g).
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        rank_local: int,
        rank_shared: int,
        scaling: float,
        seed: int,
        basis: str = "orthogonal",
        code_norm: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"an edit site wraps nn.Linear, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.scaling = float(scaling)
        self.code_norm = bool(code_norm)
        self.seed = int(seed)
        device = base_layer.weight.device
        d_out, d_in = base_layer.weight.shape
        a_local, a_shared = orthonormal_bases(d_in, rank_local, rank_shared, seed, basis)
        # The bases are derived from the seed: not part of the saved state.
        self.register_buffer("A_local", a_local.to(device), persistent=False)
        self.register_buffer("A_shared", a_shared.to(device), persistent=False)
        self.B_local = nn.Parameter(torch.zeros(d_out, rank_local, device=device), requires_grad=False)
        self.B_shared = nn.Parameter(torch.zeros(d_out, rank_shared, device=device), requires_grad=False)
        self.register_buffer("P_local", torch.eye(rank_local, device=device))
        self.register_buffer("P_shared", torch.eye(rank_shared, device=device))

    @property
    def rank_local(self) -> int:
        return self.A_local.shape[0]

    @property
    def rank_shared(self) -> int:
        return self.A_shared.shape[0]

    def _code(self, x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        code = F.linear(x, basis)
        if self.code_norm and code.shape[-1] > 0:
            code = F.layer_norm(code, code.shape[-1:])
        return code

    def local_code(self, x: torch.Tensor) -> torch.Tensor:
        """``A_l x`` (with the optional LayerNorm) for float32 inputs (..., d_in) -> (..., r_l)."""
        return self._code(x, self.A_local)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """``s (B_l A_l x + B_g A_g x)`` in the state dtype (float32) for x (..., d_in) -> (..., d_out)."""
        xs = x.to(self.B_local.dtype)
        out = F.linear(self._code(xs, self.A_local), self.B_local)
        if self.rank_shared:
            out = out + F.linear(self._code(xs, self.A_shared), self.B_shared)
        return out * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.delta(x).to(x.dtype)

    def merged_weight(self) -> torch.Tensor:
        """``W + s (B_l A_l + B_g A_g)`` in float32 (only valid without the code LayerNorm)."""
        if self.code_norm:
            raise ValueError("edits written through a LayerNorm on the code cannot be merged into W")
        update = self.B_local @ self.A_local
        if self.rank_shared:
            update = update + self.B_shared @ self.A_shared
        return self.base_layer.weight.to(update.dtype) + self.scaling * update

    def extra_repr(self) -> str:
        return f"rank_local={self.rank_local}, rank_shared={self.rank_shared}, scaling={self.scaling}"
