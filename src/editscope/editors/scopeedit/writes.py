"""A fact's identity and a write's compact form, as the re-edit memory keeps them."""

from __future__ import annotations

import hashlib

import torch

from editscope.types import ModelInputs

WRITES = ("B_local", "B_shared")  # the branches of a remembered write (codes: "local" | "shared")
COMPACT_RTOL = 1e-6  # singular values below this fraction of the largest are float noise


def compact_write(change: torch.Tensor) -> torch.Tensor:
    """A write ``W`` (d_out x r) as it is kept in the re-edit memory: the matrix itself, or,
    where its numerical rank ``q`` makes it smaller, the factors of ``W = U V^T`` stacked as one
    (d_out + r) x q matrix ``[U; V]`` (``U`` holds the singular values). The factors drop only
    singular values below ``COMPACT_RTOL`` of the largest."""
    d_out, r = change.shape
    u, values, vh = torch.linalg.svd(change.double(), full_matrices=False)
    q = int((values > COMPACT_RTOL * values[0]).sum()) if values.numel() and float(values[0]) > 0 else 0
    if (d_out + r) * q >= d_out * r:
        return change
    return torch.cat([u[:, :q] * values[:q], vh[:q].T]).to(change.dtype)


def expand_write(stored: torch.Tensor, shape: torch.Size | tuple[int, int]) -> torch.Tensor:
    """The write ``W`` of shape ``shape`` back from what :func:`compact_write` kept."""
    d_out, r = shape
    if tuple(stored.shape) == (d_out, r):
        return stored
    return stored[:d_out] @ stored[d_out:].T


def fact_key(inputs: ModelInputs) -> str:
    """Identity of the fact an edit input asks about: its image tensors and its prompt tokens
    (the target is not part of it, so a re-edit to a new value has the same key)."""
    digest = hashlib.sha1()
    ids = inputs.input_ids.reshape(-1)
    end = int(inputs.target_positions[0]) + 1 if inputs.target_positions.numel() else ids.numel()
    digest.update(ids[:end].detach().cpu().to(torch.int64).numpy().tobytes())
    for name in sorted(inputs.tensors):
        if name in ("input_ids", "attention_mask"):
            continue
        tensor = inputs.tensors[name].detach().cpu().contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_write(where: str, tensor: torch.Tensor, target: torch.Tensor) -> None:
    """A remembered write for ``target`` (a site's ``B``) is the matrix or its factors."""
    d_out, r = target.shape
    full = tuple(tensor.shape) == tuple(target.shape)
    factored = tensor.dim() == 2 and tensor.shape[0] == d_out + r and 0 < tensor.shape[1] < r
    if not (full or factored) or not torch.isfinite(tensor).all():
        raise ValueError(
            f"editor state {where}: a write of shape {tuple(tensor.shape)}, expected "
            f"{(d_out, r)} or factors of shape ({d_out + r}, q < {r})"
        )
