"""Scope by example in ScopeMemory: a slot's thresholds calibrated between the request's
``also`` examples (inputs that must follow the edit) and its ``never`` examples (inputs that
must keep their answers).

- An ``also`` example that shows another image than the edit's is a positive of the slot: the
  shared rule measures an input's image by its nearest positive (the edit's image or such an
  example), and the shared write is turned on. The example also caps the slot's thresholds at
  its own similarities to the edit, so that no later calibration (against the reference set,
  anchors, other slots) raises them past it: an input as near to a positive as the positives
  are to each other passes.
- A ``never`` example is a negative of the slot: an input follows the shared write only where
  its nearest positive is ``margin`` nearer than its nearest ``never`` example, so a look-alike
  is kept out by its own likeness to the negatives, not by one threshold around the edit's
  image (which cannot keep out a look-alike that is closer to the edit than the subject's other
  images are; ``docs/results/scope-examples.md``). Where a ``never`` example still passes (it
  shows the edit's own image with a close question) or keeps an ``also`` example out (the two
  are near-duplicates), the edit is refused with :class:`ScopeConflict`, before anything is
  written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from editscope.editors.base import EditRejected
from editscope.editors.scopememory.router import Examples, SlotKeys, Thresholds, passes, raise_thresholds
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
              floors: Floors, request: EditRequest, views: torch.Tensor | None = None,
              view_margin: float = 0.0) -> SlotKeys:
    """A new slot's routing keys, examples and thresholds: the question threshold capped by its
    ``also`` examples, both raised against ``negatives`` and its ``never`` examples. ``views``
    (K, d) are image keys of the edit image's own views: positives like the ``also`` examples on
    other images, but they neither cap a threshold nor turn the shared write on, and each counts
    ``view_margin`` less near than its cosine (an input that only a view admits must be nearer to
    it than the threshold by that much). Raises
    :class:`ScopeConflict` naming the first ``never`` example that still passes, or that keeps
    an ``also`` example from passing."""
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
    if bool(beyond.any()):  # as near to a positive as the positives are to each other passes
        cap_image = torch.minimum(cap_image, si_also[beyond].min()[None])
    positives = also[1][beyond] if views is None else torch.cat([also[1][beyond], views])
    owner = torch.zeros(positives.shape[0], dtype=torch.long, device=device)
    offset = torch.zeros(positives.shape[0], device=device)
    if views is not None and views.shape[0]:
        offset[-views.shape[0]:] = -view_margin
    ex = Examples(also=positives, also_owner=owner, never=never[1][never[2]],
                  never_owner=torch.zeros(int(never[2].sum()), dtype=torch.long, device=device), also_offset=offset)
    slot = SlotKeys(text=q, image=v, has_image=has, shared=torch.tensor([shared], device=device),
                    active=torch.ones(1, dtype=torch.bool, device=device),
                    tau_text=torch.minimum(torch.tensor([floors.text], device=device), cap_text),
                    tau_image=torch.minimum(torch.tensor([floors.image], device=device), cap_image),
                    cap_text=cap_text, cap_image=cap_image,
                    examples=ex if (ex.also.shape[0] or ex.never.shape[0]) else None)
    all_negatives = tuple(torch.cat([negatives[i], never[i]]) for i in range(3))
    slot.tau_text, slot.tau_image = raise_thresholds(slot, *all_negatives, limits)
    if never[0].shape[0]:
        still = passes(slot, *never, limits)[:, 0]
        if bool(still.any()):
            j = int(still.nonzero()[0])
            raise ScopeConflict(_own_image(j, request.never[j], float(never[0][j] @ q[0]), float(slot.caps(limits)[0][0]),
                                           sq_also, request.also))
    if also[0].shape[0]:
        lost = ~passes(slot, *also, limits)[:, 0]
        if bool(lost.any()):
            i = int(lost.nonzero()[0])
            closeness = never[1] @ also[1][i]
            j = int(closeness.argmax()) if closeness.numel() else -1
            # a never example is to blame where it is within the margin of the example's own key
            blamed = j >= 0 and float(closeness[j]) + limits.margin > float(also[1][i] @ also[1][i])
            raise ScopeConflict(_inseparable(i, j, request, float(closeness[j]) if blamed else None, limits))
    return slot


def _own_image(j: int, example: ScopeExample, sq: float, cap: float, sq_also: torch.Tensor,
               also: Sequence[ScopeExample]) -> str:
    """Why ``never`` example ``j``, on the edit's own image, cannot be excluded."""
    holder = "the edit itself"
    for i in range(len(also)):
        if abs(float(sq_also[i]) - cap) < 1e-6:
            holder = f"also example {i + 1} ({_label(also[i])}, question similarity {cap:.3f})"
    return (f"never example {j + 1} ({_label(example)}) shows the edit's own image with a question as close to "
            f"the edit's as {holder}: question similarity {sq:.3f} to the edit, and the threshold may rise to "
            f"{cap:.3f} at most; the edit is refused and nothing was written")


def _inseparable(i: int, j: int, request: EditRequest, closeness: float | None, limits: Thresholds) -> str:
    """Why ``also`` example ``i`` would not follow the edit (``never`` example ``j`` is as near)."""
    also = f"also example {i + 1} ({_label(request.also[i])})"
    tail = "; the edit is refused and nothing was written"
    if closeness is None:
        return f"{also} would not reach the edit's slot under its calibrated thresholds{tail}"
    return (f"never example {j + 1} ({_label(request.never[j])}) cannot be kept apart from {also}: image "
            f"similarity {closeness:.3f} between them, and an input follows the edit only where its nearest "
            f"positive is {limits.margin} nearer than its nearest never example{tail}")


def _label(example: ScopeExample) -> str:
    image = str(example.image) if isinstance(example.image, (str, Path)) else (
        getattr(example.image, "filename", "") or "an image")
    return f"{image}, {example.prompt!r}"
