"""A fact's identity and a slot write's storage form (small pure functions of ScopeMemory)."""

from __future__ import annotations

import hashlib

import torch

from editscope.editors.scopeedit.writes import fact_key
from editscope.types import EditRequest, ModelInputs


def answer_id(answer: str) -> int:
    """A positive int64 id of an answer as ``reference_agreement`` compares them: stripped, lower
    case, without a final full stop."""
    plain = answer.strip().rstrip(".").strip().lower()
    return int.from_bytes(hashlib.sha256(plain.encode()).digest()[:7], "little") + 1


def fact_bytes(request: EditRequest, inputs: ModelInputs) -> torch.Tensor:
    """The 20-byte identity of the fact an edit is about: the request's ``fact_id`` when given,
    else the image tensors and prompt tokens of its encoded input (not its target)."""
    if request.fact_id is not None:
        digest = hashlib.sha1(b"fact_id:" + request.fact_id.encode()).digest()
    else:
        digest = bytes.fromhex(fact_key(inputs))
    return torch.tensor(list(digest), dtype=torch.uint8)


def truncated(change: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``W`` (d_out, r) as factors ``U`` (d_out, rank) (singular values folded in) and ``V``
    (r, rank) with ``W ~ U V^T`` (its best rank-``rank`` approximation), zero-padded."""
    d_out, r = change.shape
    u, values, vh = torch.linalg.svd(change.double(), full_matrices=False)
    k = min(rank, values.numel())
    left = torch.zeros(d_out, rank, dtype=torch.float64)
    right = torch.zeros(r, rank, dtype=torch.float64)
    left[:, :k] = u[:, :k] * values[:k]
    right[:, :k] = vh[:k].T
    return left.float(), right.float()
