"""The evidence gate of the shared (generalization) branch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Gate:
    """Gate values for one site (all 0-dim tensors except ``q``, shaped (rank_shared,))."""

    cos: torch.Tensor
    support: torch.Tensor
    gamma: torch.Tensor
    g: torch.Tensor
    q: torch.Tensor


def evidence_gate(
    u_text: torch.Tensor,
    u_image: torch.Tensor,
    tau: float,
    beta: float,
    eps: float = 1e-6,
    force_open: bool = False,
) -> Gate:
    """Gate the shared step on the agreement of the projected text and image keys.

    ``cos = u_t.u_v / (|u_t||u_v| + eps)``; ``support = min(|u_t|,|u_v|) / (max(|u_t|,|u_v|) + eps)``;
    ``gamma = sigmoid(beta (cos - tau)) * support`` (or 1 when ``force_open``);
    ``w_v = |u_v| / (|u_t| + |u_v| + eps)``, ``w_t`` likewise; ``g = gamma w_v``;
    ``q = normalise(gamma w_t u_t + gamma w_v u_v)`` (plain normalisation, zero stays zero).
    """
    n_text = u_text.norm()
    n_image = u_image.norm()
    cos = (u_text @ u_image) / (n_text * n_image + eps)
    support = torch.minimum(n_text, n_image) / (torch.maximum(n_text, n_image) + eps)
    if force_open:
        gamma = torch.ones_like(cos)
    else:
        gamma = torch.sigmoid(beta * (cos - tau)) * support
    w_image = n_image / (n_text + n_image + eps)
    w_text = n_text / (n_text + n_image + eps)
    g = gamma * w_image
    q = F.normalize(gamma * w_text * u_text + gamma * w_image * u_image, dim=0, eps=1e-12)
    return Gate(cos=cos, support=support, gamma=gamma, g=g, q=q)
