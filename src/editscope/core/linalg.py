"""Small linear-algebra building blocks of the editor: seeded orthonormal bases and the
Sherman–Morrison update of a preconditioner."""

from __future__ import annotations

import zlib

import torch


def site_seed(seed: int, site_name: str) -> int:
    """A per-site seed derived from the editor seed and the site's module path (stable across
    runs and machines)."""
    return (int(seed) * 1_000_003 + zlib.crc32(site_name.encode())) % (2**63 - 1)


def orthonormal_bases(
    d_in: int, rank_local: int, rank_shared: int, seed: int, basis: str = "orthogonal"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen bases ``A_l`` (rank_local, d_in) and ``A_g`` (rank_shared, d_in), float32.

    ``"orthogonal"``: rows of one random orthogonal matrix, so each basis has orthonormal rows
    and ``A_l @ A_g.T == 0`` (to float tolerance). ``"nested"`` (ablation): the shared rows are
    the first ``rank_shared`` local rows. Built in float64 on the CPU from a seeded generator so
    that the same seed gives the same bases everywhere.
    """
    total = rank_local + (rank_shared if basis == "orthogonal" else 0)
    if total > d_in:
        raise ValueError(
            f"rank {total} exceeds the input width {d_in}: an edit site needs rank <= d_in "
            "(lower rank_local/rank_shared for this model)"
        )
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(d_in, max(total, 1), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # unique QR: positive diagonal
    rows = q.T[:total]
    a_local = rows[:rank_local]
    if basis == "orthogonal":
        a_shared = rows[rank_local:total]
    elif basis == "nested":
        a_shared = rows[:rank_shared]
    else:
        raise ValueError(f"unknown basis {basis!r}")
    return a_local.float().contiguous(), a_shared.float().contiguous()


def sherman_morrison(p: torch.Tensor, code: torch.Tensor, lam: float) -> torch.Tensor:
    """One rank-one update of ``P = inv(lam*I + sum c c^T)`` with a new code ``c`` (r,).

    ``P <- P - (P c)(P c)^T / (lam + c^T P c)``; O(r^2), no inversion.
    """
    pc = p @ code
    return p - torch.outer(pc, pc) / (lam + code @ pc)


def sherman_morrison_downdate(p: torch.Tensor, code: torch.Tensor, lam: float) -> torch.Tensor:
    """Take a code folded earlier back out of ``P`` (the inverse of :func:`sherman_morrison`).

    ``P <- P + (P c)(P c)^T / (lam - c^T P c)``; O(r^2). Computed in float64. Where ``c`` was
    not in ``P`` the denominator can reach zero; such a code is left in place (``P`` returned
    unchanged) rather than producing an indefinite matrix.
    """
    p64 = p.double()
    c64 = code.double()
    pc = p64 @ c64
    denominator = lam - c64 @ pc
    if not float(denominator) > 1e-9 * lam:
        return p
    return (p64 + torch.outer(pc, pc) / denominator).to(p.dtype)


def gated_sherman_morrison(
    p: torch.Tensor, code: torch.Tensor, lam: float, open_: torch.Tensor
) -> torch.Tensor:
    """``sherman_morrison`` applied where ``open_`` (a 0-dim bool tensor) is true and ``p``
    returned unchanged (bit for bit) where it is false, without a host-device sync."""
    pc = p @ code
    denominator = lam + code @ pc
    step = torch.outer(pc, pc) / denominator
    return torch.where(open_, p - step, p)


def fold_second_moment(p: torch.Tensor, moment: torch.Tensor, lam: float) -> torch.Tensor:
    """Fold a whole second moment ``M = sum c c^T`` (r, r) into ``P`` at once.

    The result equals folding every code of ``M`` one by one with :func:`sherman_morrison`:
    ``P^-1 = I + sum c c^T / lam`` grows by ``M / lam``, so ``P <- (I + P M / lam)^-1 P``.
    One r x r solve in float64 (used once, for a reference set, never per edit).
    """
    p64 = p.double()
    eye = torch.eye(p64.shape[0], dtype=torch.float64, device=p64.device)
    folded = torch.linalg.solve(eye + p64 @ moment.double() / lam, p64)
    return (0.5 * (folded + folded.T)).to(p.dtype)
