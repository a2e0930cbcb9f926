"""The metrics of docs/evaluation.md as small pure functions.

Token-level metrics take the logits of one teacher-forced example, ``(T, V)`` over the whole
sequence, and the ``positions`` ``(n,)`` whose logits predict the answer tokens.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

SCOPE_CLASSES: tuple[str, ...] = ("proper", "under", "over", "entangled")
DEFAULT_SCOPE_THRESHOLD = 0.5
FULL_SEQUENCE_TOPK = 10


@dataclass(frozen=True)
class ProbeOutputs:
    """What the model predicts on one teacher-forced probe.

    - ``answer_top1`` (n,): argmax ids at the answer positions;
    - ``full_top1`` (T,): argmax ids at every position of the sequence;
    - ``full_topk`` (T, k): the top-k ids (best first) at every position.
    """

    answer_top1: torch.Tensor
    full_top1: torch.Tensor
    full_topk: torch.Tensor


def probe_outputs(logits: torch.Tensor, positions: torch.Tensor, k: int = FULL_SEQUENCE_TOPK) -> ProbeOutputs:
    """Summarise ``logits`` (T, V) into the predictions the locality metrics compare."""
    if logits.dim() != 2:
        raise ValueError(f"expected logits of shape (T, V), got {tuple(logits.shape)}")
    logits = logits.detach()
    k = min(k, logits.shape[-1])
    return ProbeOutputs(
        answer_top1=logits[positions.long()].argmax(-1).cpu(),
        full_top1=logits.argmax(-1).cpu(),
        full_topk=logits.topk(k, dim=-1).indices.cpu(),
    )


def token_accuracy(predicted_ids: Sequence[int] | torch.Tensor, target_ids: Sequence[int] | torch.Tensor) -> float:
    """Share of target tokens whose teacher-forced argmax is the target token."""
    pred = torch.as_tensor(predicted_ids).reshape(-1)
    target = torch.as_tensor(target_ids).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(f"predicted ids {tuple(pred.shape)} and target ids {tuple(target.shape)} differ in length")
    if target.numel() == 0:
        raise ValueError("token accuracy of an empty target")
    return (pred == target).float().mean().item()


def agreement(reference: torch.Tensor, current: torch.Tensor) -> float:
    """Share of elements equal in two id tensors of the same shape (top-1 ids per position,
    or top-k id lists compared rank by rank)."""
    if reference.shape != current.shape:
        raise ValueError(f"cannot compare predictions of shapes {tuple(reference.shape)} and {tuple(current.shape)}")
    if reference.numel() == 0:
        raise ValueError("agreement of empty predictions")
    return (reference == current).float().mean().item()


@dataclass(frozen=True)
class LocalityScores:
    answer_top1: float   # answer positions only (the strict metric)
    full_top1: float     # every position, top-1 (the field's T-Loc)
    full_topk: float     # every position, top-k rank by rank (the field's M-Loc)

    @property
    def changed(self) -> bool:
        """Whether the probe's answer changed: any answer token's top-1 differs."""
        return self.answer_top1 < 1.0


def locality(reference: ProbeOutputs, current: ProbeOutputs) -> LocalityScores:
    return LocalityScores(
        answer_top1=agreement(reference.answer_top1, current.answer_top1),
        full_top1=agreement(reference.full_top1, current.full_top1),
        full_topk=agreement(reference.full_topk, current.full_topk),
    )


_PUNCT_END = re.compile(r"[\s.,;:!?\"']+$")


def normalize_answer(text: str) -> str:
    """Lower case, collapsed whitespace, no trailing punctuation."""
    return _PUNCT_END.sub("", " ".join(text.lower().split()))


def exact_match(generated: str, target: str) -> float:
    """1.0 when the greedy answer equals the target (after ``normalize_answer``), else 0.0."""
    return float(normalize_answer(generated) == normalize_answer(target))


def in_scope_transfer(t_gen: float | None, m_gen: float | None, text_transfer: Iterable[float] = ()) -> float | None:
    """Mean of the available in-scope scores (T-Gen, M-Gen, text-only transfer questions)."""
    values = [v for v in (t_gen, m_gen, *text_transfer) if v is not None]
    return sum(values) / len(values) if values else None


def classify_scope(rel: float, transfer: float | None, leaked: bool,
                   threshold: float = DEFAULT_SCOPE_THRESHOLD) -> str | None:
    """Scope class of one edit: ``proper``, ``under``, ``over`` or ``entangled``.

    Only reliable edits (``rel == 1``) with at least one in-scope probe are classified;
    others give ``None``. An edit transfers when ``transfer >= threshold``.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"scope threshold must lie in [0, 1], got {threshold}")
    if rel < 1.0 or transfer is None:
        return None
    transfers = transfer >= threshold
    if transfers:
        return "over" if leaked else "proper"
    return "entangled" if leaked else "under"


def scope_shares(classes: Iterable[str | None]) -> dict[str, float | None]:
    """Share of each class among the classified edits (``None`` entries are not counted)."""
    counted = [c for c in classes if c is not None]
    for c in counted:
        if c not in SCOPE_CLASSES:
            raise ValueError(f"unknown scope class {c!r}")
    if not counted:
        return {f"{name}_share": None for name in SCOPE_CLASSES}
    return {f"{name}_share": counted.count(name) / len(counted) for name in SCOPE_CLASSES}


def leak_rate(changed: Iterable[bool]) -> float | None:
    """Share of out-of-scope probes whose answer changed."""
    flags = list(changed)
    return sum(flags) / len(flags) if flags else None


def mean_or_none(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None
