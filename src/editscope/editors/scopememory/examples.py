"""Scope by example in ScopeMemory: a slot's thresholds calibrated between the request's
``also`` examples (inputs that must follow the edit) and its ``never`` examples (inputs that
must keep their answers).

- An ``also`` example caps the slot's thresholds at its own similarities to the edit, so that
  no later calibration (against the reference set, anchors, other slots) raises them past it;
  one that shows another image than the edit's turns the shared write on.
- A ``never`` example is a negative the calibration must exclude. Where no threshold under the
  caps excludes it, the edit is refused with :class:`ScopeConflict`, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from editscope.editors.base import EditRejected
from editscope.editors.scopememory.router import SlotKeys, Thresholds, passes, raise_thresholds
from editscope.types import EditRequest, ScopeExample

Keys = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # question keys, image keys, has-image
SLACK = 1e-3


class ScopeConflict(EditRejected):
    """A ``never`` example cannot be kept apart from the edit; nothing was written."""


@dataclass(frozen=True)
class Floors:
    """Where a new slot's thresholds start (the config's floors) and their global limits."""

    text: float
    image: float
    limits: Thresholds


def stack(parts: Sequence[Keys], width: int, device: torch.device) -> Keys:
    """The rows of several key triples as one (empty triples of width ``width`` for none)."""
    if not parts:
        return (torch.zeros(0, width, device=device), torch.zeros(0, width, device=device),
                torch.zeros(0, dtype=torch.bool, device=device))
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def check_request(request: EditRequest, has_image: bool, rank_shared: int, beyond: torch.Tensor) -> bool:
    """Whether the examples require the shared write (an ``also`` example shows another image
    than the edit's: ``beyond``); raises ``ValueError`` where the request contradicts itself."""
    if not (request.also or request.never):
        return False
    if not has_image:
        raise ValueError("scope examples (also/never) need an edit with an image: a text-only edit "
                         "never reaches an input with an image")
    if not bool(beyond.any()):
        return False
    first = int(beyond.nonzero()[0])
    if request.effective_scope == "instance":
        raise ValueError(f"also example {first + 1} shows another image than the edit's, which scope "
                         "'instance' keeps the edit from reaching: state scope 'auto' or 'broad'")
    if not rank_shared:
        raise ValueError(f"also example {first + 1} shows another image than the edit's, but this "
                         "ScopeMemory has no shared branch (rank_shared 0) to reach it with")
    return True


def calibrate(keys: Keys, shared: bool, also: Keys, beyond: torch.Tensor, negatives: Keys, never: Keys,
              floors: Floors, request: EditRequest) -> SlotKeys:
    """A new slot's routing keys and thresholds: capped by its ``also`` examples, raised against
    ``negatives`` and its ``never`` examples. Raises :class:`ScopeConflict` naming the first
    ``never`` example that still passes."""
    q, v, has = keys
    device = q.device
    limits = floors.limits
    cap_text = torch.tensor([limits.cap], device=device)
    cap_image = cap_text.clone()
    # an example's keys read a little differently from pass to pass (float sums over other
    # sequence lengths): the caps keep a slack below its similarities
    sq_also, si_also = also[0] @ q[0] - SLACK, also[1] @ v[0] - SLACK
    if sq_also.numel():
        cap_text = torch.minimum(cap_text, sq_also.min()[None])
    if bool(beyond.any()):
        cap_image = torch.minimum(cap_image, si_also[beyond].min()[None])
    slot = SlotKeys(text=q, image=v, has_image=has, shared=torch.tensor([shared], device=device),
                    active=torch.ones(1, dtype=torch.bool, device=device),
                    tau_text=torch.minimum(torch.tensor([floors.text], device=device), cap_text),
                    tau_image=torch.minimum(torch.tensor([floors.image], device=device), cap_image),
                    cap_text=cap_text, cap_image=cap_image)
    all_negatives = tuple(torch.cat([negatives[i], never[i]]) for i in range(3))
    slot.tau_text, slot.tau_image = raise_thresholds(slot, *all_negatives, limits)
    if never[0].shape[0]:
        still = passes(slot, *never, limits)[:, 0]
        if bool(still.any()):
            j = int(still.nonzero()[0])
            raise ScopeConflict(_conflict(j, request.never[j], float(never[0][j] @ q[0]), float(never[1][j] @ v[0]),
                                          slot, sq_also, si_also, beyond, request.also, limits))
    return slot


def _conflict(j: int, example: ScopeExample, sq: float, si: float, slot: SlotKeys, sq_also: torch.Tensor,
              si_also: torch.Tensor, beyond: torch.Tensor, also: Sequence[ScopeExample], limits: Thresholds) -> str:
    """Why ``never`` example ``j`` cannot be excluded, naming what holds the threshold down."""
    name = f"never example {j + 1} ({_label(example)})"
    tail = "; the edit is refused and nothing was written"
    cap_text, cap_image = float(slot.cap_text[0]), float(slot.cap_image[0])
    if si >= limits.instance:
        holder = _holder(sq_also, cap_text, also, range(len(also)), "question")
        return (f"{name} shows the edit's own image with a question as close to the edit's as {holder}: "
                f"question similarity {sq:.3f} to the edit, and the threshold may rise to {cap_text:.3f} "
                f"at most{tail}")
    holder = _holder(si_also, cap_image, also, [i for i in range(len(also)) if bool(beyond[i])], "image")
    return (f"{name} is closer to the edit than {holder}: image similarity {si:.3f} to the edit, and the "
            f"image threshold may rise to {cap_image:.3f} at most (a margin of {limits.margin} above a "
            f"negative is needed){tail}")


def _holder(similarities: torch.Tensor, cap: float, also: Sequence[ScopeExample], among: Sequence[int],
            kind: str) -> str:
    for i in among:
        if abs(float(similarities[i]) - cap) < 1e-6:
            return f"also example {i + 1} ({_label(also[i])}, {kind} similarity {cap:.3f})"
    return f"the edit itself (the threshold cap {cap:.3f})"


def _label(example: ScopeExample) -> str:
    image = str(example.image) if isinstance(example.image, (str, Path)) else (
        getattr(example.image, "filename", "") or "an image")
    return f"{image}, {example.prompt!r}"
