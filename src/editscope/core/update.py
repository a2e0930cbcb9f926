"""The two writes of one edit step at one site, as functions of the site's recorded code,
keys and gradients (docs/method.md, steps 5 and 6)."""

from __future__ import annotations

import torch

from editscope.core.gate import Gate, evidence_gate
from editscope.core.linalg import gated_sherman_morrison, sherman_morrison
from editscope.core.site import EditSite


@torch.no_grad()
def local_update(site: EditSite, grad: torch.Tensor, code: torch.Tensor, eta: float, lam: float,
                 fold: bool = True) -> None:
    """``B_l <- B_l - eta grad P_l`` (with ``P_l`` from before the step), then ``P_l <- SM(P_l, z)``
    (unless ``fold`` is false: the caller folds the edit's code itself, once, after its steps).

    grad (d_out, r_l); code (r_l,).
    """
    site.B_local.sub_(eta * (grad.to(site.B_local.dtype) @ site.P_local))
    if fold:
        site.P_local.copy_(sherman_morrison(site.P_local, code.to(site.P_local.dtype), lam))


@torch.no_grad()
def fold_code(site: EditSite, code: torch.Tensor, lam: float) -> None:
    """Fold a locality anchor's local code into ``P_l`` (no write to ``B_l``)."""
    site.P_local.copy_(sherman_morrison(site.P_local, code.to(site.P_local.dtype), lam))


@torch.no_grad()
def shared_update(
    site: EditSite,
    grad: torch.Tensor,
    k_text: torch.Tensor,
    k_image: torch.Tensor,
    *,
    eta: float,
    lam: float,
    tau: float,
    beta: float,
    eps: float = 1e-6,
    force_open: bool = False,
    fold: bool = True,
) -> Gate:
    """The gated shared write: ``u = A_g k`` for both keys, the evidence gate, then, where
    ``g > 0``, ``B_g <- B_g - eta g grad P_g`` and ``P_g <- SM(P_g, q)``. A closed gate leaves
    ``B_g`` and ``P_g`` bit for bit as they were (no host sync either way). With ``fold`` false
    ``P_g`` is left alone (the caller folds the edit's ``q`` once, after its steps).

    grad (d_out, r_g); k_text, k_image (d_in,).
    """
    dtype = site.A_shared.dtype
    gate = evidence_gate(
        site.A_shared @ k_text.to(dtype),
        site.A_shared @ k_image.to(dtype),
        tau,
        beta,
        eps,
        force_open=force_open,
    )
    is_open = gate.g > 0
    step = (eta * gate.g) * (grad.to(dtype) @ site.P_shared)
    site.B_shared.copy_(torch.where(is_open, site.B_shared - step, site.B_shared))
    if fold:
        site.P_shared.copy_(gated_sherman_morrison(site.P_shared, gate.q, lam, is_open))
    return gate
