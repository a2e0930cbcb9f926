"""The router of ScopeMemory as small pure functions on tensors: where a prompt ends, which slot
an input matches, and how a slot's thresholds are calibrated against negatives.

Keys are unit vectors: a decoder layer's MLP input at the last prompt token (the *question
key*) and its mean over the image-token positions (the *image key*), each minus the mean of a
reference set, then normalised. Both are read before any answer token, from positions no slot
writes to, so they are the same for a teacher-forced score and for every step of greedy
decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

NO_SLOT = -1


def common_suffix(sequences: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The longest run of ids every sequence ends with (the chat template's generation prompt)."""
    suffix: list[int] = []
    for items in zip(*(reversed(list(s)) for s in sequences)):
        if len(set(items)) != 1:
            break
        suffix.append(items[0])
    return tuple(reversed(suffix))


def prompt_ends(input_ids: torch.Tensor, marker: torch.Tensor) -> torch.Tensor:
    """For each row of ``input_ids`` (B, T), the position of the last prompt token: the end of
    the last occurrence of ``marker`` (m,), else the row's last position. Returns (B,) long."""
    batch, length = input_ids.shape
    last = torch.full((batch,), length - 1, dtype=torch.long, device=input_ids.device)
    m = marker.numel()
    if m == 0 or m > length:
        return last
    windows = input_ids.unfold(1, m, 1)  # (B, T - m + 1, m)
    found = (windows == marker.to(input_ids.device)).all(-1)
    ends = torch.arange(m - 1, length, device=input_ids.device).expand_as(found)
    best = torch.where(found, ends, torch.full_like(ends, -1)).max(dim=1).values
    return torch.where(best >= 0, best, last)


def unit_keys(x: torch.Tensor, centre: torch.Tensor, basis: torch.Tensor | None = None,
              scale: torch.Tensor | None = None) -> torch.Tensor:
    """Rows of ``x`` (n, d) minus ``centre`` (d,), whitened where ``basis`` (r, d) is given
    (see :func:`whitening`), normalised (a zero row stays zero)."""
    x = x.float() - centre
    if basis is not None and basis.shape[0]:
        x = x + ((x @ basis.T) * scale) @ basis
    return F.normalize(x, dim=-1, eps=1e-12)


def whitening(keys: torch.Tensor, shrink: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The shrunk whitening ``(Σ + λ I)^{-1/2}`` of the rows of ``keys`` (n, d), up to a scale
    (cosines ignore it), in low-rank form: ``x + ((x @ B.T) * s) @ B`` with ``B`` (r, d) the
    covariance's eigenvectors and ``s = sqrt(λ / (e + λ)) - 1`` (r,), ``λ = shrink`` times the
    mean eigenvalue. Directions the keys vary along most are shrunk most, so that two keys are
    compared on what sets them apart rather than on what every key shares."""
    centred = keys.float() - keys.float().mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    eig = singular.square() / max(1, keys.shape[0] - 1)
    keep = eig > eig.max() * 1e-6 if eig.numel() else eig > 0
    lam = shrink * float(eig.sum()) / keys.shape[1]
    return vh[keep].contiguous(), (lam / (eig[keep] + lam)).sqrt() - 1


@dataclass(frozen=True)
class Thresholds:
    """Global values of the router (from the config)."""

    instance: float
    text_only: float
    margin: float
    cap: float
    lead: float = 2.0  # a slot's shared write needs its image within this of the nearest slot's (2: off)


@dataclass
class Examples:
    """The image keys of slots' scope examples, all slots' in one table: ``also`` (P, d) with
    ``also_owner`` (P,) the slot each belongs to, and ``never`` (Q, d) with ``never_owner`` (Q,).
    ``also_offset`` (P, at most 0) counts a positive as that much less near than its cosine (the
    editor's own views of the edit image, ``ScopeMemoryConfig.view_margin``)."""

    also: torch.Tensor
    also_owner: torch.Tensor
    never: torch.Tensor
    never_owner: torch.Tensor
    also_offset: torch.Tensor | None = None  # (P,) added to each ``also`` row's cosine (None: zeros)


@dataclass
class SlotKeys:
    """The router's view of N slots: question keys (N, d), image keys (N, d) (zeros for a
    text-only slot), ``has_image``, ``shared`` (the shared write may fire), ``active`` (N,)
    bools, the calibrated thresholds ``tau_text`` and ``tau_image`` (N,), and the image keys of
    their scope examples (``None``: no slot has any)."""

    text: torch.Tensor
    image: torch.Tensor
    has_image: torch.Tensor
    shared: torch.Tensor
    active: torch.Tensor
    tau_text: torch.Tensor
    tau_image: torch.Tensor
    cap_text: torch.Tensor | None = None  # (N,) calibration never raises a threshold above these
    cap_image: torch.Tensor | None = None  # (None: the global cap); an ``also`` example sets them
    examples: Examples | None = None

    def caps(self, limits: Thresholds) -> tuple[torch.Tensor, torch.Tensor]:
        """Each slot's highest allowed ``tau_text`` and ``tau_image`` (N,)."""
        whole = torch.full_like(self.tau_text, limits.cap)
        return (whole if self.cap_text is None else torch.minimum(self.cap_text, whole),
                whole if self.cap_image is None else torch.minimum(self.cap_image, whole))


@dataclass(frozen=True)
class Route:
    """Per batch row: the slot an input routes to (``NO_SLOT`` for none), whether its local
    write applies (the slot's instance) and whether its shared write applies."""

    slot: torch.Tensor
    local: torch.Tensor
    shared: torch.Tensor


@dataclass(frozen=True)
class Similarities:
    """(B, N) cosines of B inputs to N slots: ``text`` (question keys), ``image`` (the slot's
    edit image), ``near`` (the nearest of the edit image and the slot's ``also`` examples),
    ``never`` (the nearest ``never`` example; -2 for a slot without any) and ``pair`` (both
    the input and the slot have an image)."""

    text: torch.Tensor
    image: torch.Tensor
    near: torch.Tensor
    never: torch.Tensor
    pair: torch.Tensor


def _nearest(v: torch.Tensor, keys: torch.Tensor, owner: torch.Tensor, start: torch.Tensor,
             offset: torch.Tensor | None = None) -> torch.Tensor:
    """``start`` (B, N) raised to each slot's largest cosine between ``v`` (B, d) and the rows of
    ``keys`` (P, d) it owns (``owner`` (P,)), each plus its ``offset`` (P,) where given: one
    product and one scatter, no loop over slots."""
    if keys.shape[0] == 0:
        return start
    cosines = v @ keys.T if offset is None else v @ keys.T + offset[None]
    return start.scatter_reduce(1, owner[None].expand(v.shape[0], -1), cosines, reduce="amax")


def similarities(q: torch.Tensor, v: torch.Tensor, q_has_image: torch.Tensor, slots: SlotKeys) -> Similarities:
    si = v @ slots.image.T
    pair = q_has_image[:, None] & slots.has_image[None]
    near, never = si, torch.full_like(si, -2.0)
    if slots.examples is not None:
        ex = slots.examples
        near = _nearest(v, ex.also, ex.also_owner, si, ex.also_offset)
        never = _nearest(v, ex.never, ex.never_owner, never)
    return Similarities(q @ slots.text.T, si, near, never, pair)


def _rival(s: Similarities, slots: SlotKeys) -> torch.Tensor:
    """(B,): each input's cosine to the nearest positive (edit image or ``also`` example) of any
    live slot with an image; -2 where there is none."""
    return torch.where(s.pair & slots.active[None], s.near, torch.full_like(s.near, -2.0)).max(dim=1).values


def _rules(s: Similarities, q_has: torch.Tensor, slots: SlotKeys, limits: Thresholds,
           rival: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Which (input, slot) pairs pass the local and the shared rule; all tensors (B, N).

    The local rule: the question matches and the input shows the slot's own image (or neither
    has one). The shared rule, where the slot allows it: the question matches, and the input's
    nearest positive (the edit image or an ``also`` example) is at least ``tau_image``, at
    least ``margin`` nearer than its nearest ``never`` example and, where ``lead`` is set,
    within ``lead`` of the nearest positive of any live slot (an image of another edited
    subject goes to that subject's slot, not to this one), and at the instance threshold of
    this slot's positives if it is at that of another's (an input that shows another slot's
    own image is that slot's subject, however close it is to this one); a text-only input matches an image
    slot's question closely. ``rival`` (B,) is :func:`_rival` over all slots where ``slots``
    is a subset of them (see :func:`match`)."""
    q_ok = s.text >= slots.tau_text
    with_image = q_has[:, None]
    local = q_ok & torch.where(with_image, s.pair & (s.image >= limits.instance), ~slots.has_image[None])
    text_only_ok = s.text >= torch.clamp(slots.tau_text, min=limits.text_only)
    # the nearest live slot's image; a lead of 2 (the default) lets every cosine through
    rival = _rival(s, slots) if rival is None else rival
    subject = ((s.near >= slots.tau_image) & (s.near >= s.never + limits.margin)
               & (s.near >= rival[:, None] - limits.lead))
    if limits.lead < 2:  # an input that shows a live slot's own image belongs to the slots that show it
        subject = subject & ((rival[:, None] < limits.instance) | (s.near >= limits.instance))
    shared = slots.shared[None] & torch.where(with_image, s.pair & q_ok & subject,
                                              slots.has_image[None] & text_only_ok)
    active = slots.active[None]
    return local & active, shared & active


def _choose(s: Similarities, q_has_image: torch.Tensor, slots: SlotKeys, limits: Thresholds,
            rival: torch.Tensor | None = None) -> Route:
    """Among the slots whose local or shared rule passes, the one with the highest summed
    similarity (question, and nearest positive image), per input."""
    local, shared = _rules(s, q_has_image, slots, limits, rival)
    candidate = local | shared
    score = torch.where(candidate, s.text + torch.where(s.pair, s.near, torch.zeros_like(s.near)),
                        torch.full_like(s.text, -1e9))
    best = score.argmax(dim=1)
    hit = candidate.gather(1, best[:, None])[:, 0]
    return Route(
        slot=torch.where(hit, best, torch.full_like(best, NO_SLOT)),
        local=hit & local.gather(1, best[:, None])[:, 0],
        shared=hit & slots.shared[best],
    )


SCAN_TOLERANCE = 4e-3  # a bound on |half-precision cosine - float32 cosine| for unit keys


@dataclass(frozen=True)
class Scan:
    """Half-precision copies of the slots' keys for a first pass over all of them, at half the
    memory traffic: ``text`` (N, d), the question keys, and ``positive`` (N + P, d), the slots'
    edit image keys followed by their ``also`` examples, with the slot owning each row
    (``positive_owner``). Each cosine it gives is within ``tolerance`` of the exact one."""

    text: torch.Tensor
    positive: torch.Tensor
    positive_owner: torch.Tensor
    positive_offset: torch.Tensor | None = None  # (N + P,) added to each row's cosine (None: zeros)
    tolerance: float = SCAN_TOLERANCE


def build_scan(slots: SlotKeys) -> Scan:
    """The :class:`Scan` of ``slots`` (rebuild it whenever their keys change)."""
    n = slots.text.shape[0]
    owner = torch.arange(n, device=slots.text.device)
    positive, offset = slots.image, None
    if slots.examples is not None:
        positive = torch.cat([positive, slots.examples.also])
        owner = torch.cat([owner, slots.examples.also_owner])
        if slots.examples.also_offset is not None:
            offset = torch.cat([torch.zeros(n, device=positive.device), slots.examples.also_offset])
    return Scan(slots.text.half(), positive.half(), owner, offset)


_HALF_FITS: dict[tuple[str, int], bool] = {}


def half_scan_fits(device: torch.device, dim: int) -> bool:
    """Whether half-precision products of unit vectors of width ``dim`` on ``device`` stay well
    within :data:`SCAN_TOLERANCE` of float32 ones (a quarter of it, on near-parallel and random
    pairs), so a :class:`Scan` may be used there. Checked once per device and width: a device
    whose half-precision kernels accumulate in half precision fails it."""
    key = (str(device), dim)
    if key not in _HALF_FITS:
        gen = torch.Generator().manual_seed(0)
        a = F.normalize(torch.randn(64, dim, generator=gen), dim=-1)
        b = torch.cat([a + 0.05 * torch.randn(64, dim, generator=gen), torch.randn(448, dim, generator=gen)])
        a, b = a.to(device), F.normalize(b, dim=-1).to(device)
        error = ((a.half() @ b.half().T).float() - a @ b.T).abs().max()
        _HALF_FITS[key] = bool(error <= SCAN_TOLERANCE / 4)
    return _HALF_FITS[key]


def _columns(slots: SlotKeys, cols: torch.Tensor) -> SlotKeys:
    """The slots ``cols`` (k,) of ``slots``, in that order, with the scope examples they own."""
    examples = slots.examples
    if examples is not None:
        where = torch.full((slots.text.shape[0],), -1, dtype=torch.long, device=cols.device)
        where[cols] = torch.arange(cols.numel(), device=cols.device)
        also, never = where[examples.also_owner], where[examples.never_owner]
        offset = None if examples.also_offset is None else examples.also_offset[also >= 0]
        examples = Examples(examples.also[also >= 0], also[also >= 0], examples.never[never >= 0], never[never >= 0],
                            offset)
    return SlotKeys(text=slots.text[cols], image=slots.image[cols], has_image=slots.has_image[cols],
                    shared=slots.shared[cols], active=slots.active[cols], tau_text=slots.tau_text[cols],
                    tau_image=slots.tau_image[cols],
                    cap_text=None if slots.cap_text is None else slots.cap_text[cols],
                    cap_image=None if slots.cap_image is None else slots.cap_image[cols], examples=examples)


def _scan_rival(v: torch.Tensor, q_has_image: torch.Tensor, slots: SlotKeys, scan: Scan) -> torch.Tensor:
    """:func:`_rival` over all slots, from the scan: the best row in half precision, then the
    exact cosines of the rows within twice the tolerance of it (the exact best is among them)."""
    live = (slots.active & slots.has_image)[scan.positive_owner]
    low = torch.full((v.shape[0],), -2.0, device=v.device)
    if not bool(live.any()):
        return low
    approx = (v.to(scan.positive.dtype) @ scan.positive.T).float()
    if scan.positive_offset is not None:
        approx = approx + scan.positive_offset[None]
    approx = torch.where(live[None], approx, torch.full_like(approx, -2.0))
    close = live[None] & (approx >= approx.max(dim=1).values[:, None] - 2 * scan.tolerance)
    rows = close.any(0).nonzero()[:, 0]
    n = slots.image.shape[0]
    keys = slots.image[rows[rows < n]]
    if slots.examples is not None:
        keys = torch.cat([keys, slots.examples.also[rows[rows >= n] - n]])
    cosines = v @ keys.T if scan.positive_offset is None else v @ keys.T + scan.positive_offset[rows][None]
    exact = torch.where(close[:, rows], cosines, torch.full((v.shape[0], rows.numel()), -2.0, device=v.device))
    return torch.where(q_has_image, exact.max(dim=1).values, low)


def match(q: torch.Tensor, v: torch.Tensor, q_has_image: torch.Tensor, slots: SlotKeys,
          limits: Thresholds, scan: Scan | None = None, approx: torch.Tensor | None = None) -> Route:
    """Route inputs with question keys ``q`` (B, d) and image keys ``v`` (B, d) (rows of zeros
    where ``q_has_image`` is false) to at most one slot each: among the slots whose local or
    shared rule passes, the one with the highest summed similarity (question, and nearest
    positive image). One matrix product per key; no loop over slots.

    With ``scan`` (:class:`Scan`, the same keys in half precision) the route is the same, for
    less memory traffic: every rule needs the question to match, so the question keys are
    compared in half precision first and only the slots whose question could pass (within the
    scan's tolerance) are compared further, exactly; the nearest image of any live slot, which
    the ``lead`` rule needs, is found from the half-precision image keys and recomputed exactly
    among the rows close to the best. An input whose question matches no slot reads no image
    key at all. ``approx`` (B, N): those half-precision question cosines, where the caller has
    them already."""
    if scan is None:
        return _choose(similarities(q, v, q_has_image, slots), q_has_image, slots, limits)
    if approx is None:
        approx = (q.to(scan.text.dtype) @ scan.text.T).float()
    cols = ((approx >= slots.tau_text[None] - scan.tolerance) & slots.active[None]).any(0).nonzero()[:, 0]
    if cols.numel() == 0:
        none = torch.full((q.shape[0],), NO_SLOT, dtype=torch.long, device=q.device)
        return Route(none, none >= 0, none >= 0)
    sub = _columns(slots, cols)
    rival = None
    if limits.lead < 2 and bool(q_has_image.any()) and bool(sub.shared.any()):
        rival = _scan_rival(v, q_has_image, slots, scan)
    route = _choose(similarities(q, v, q_has_image, sub), q_has_image, sub, limits, rival)
    return Route(torch.where(route.slot == NO_SLOT, route.slot, cols[route.slot.clamp(min=0)]), route.local, route.shared)


def raise_thresholds(slots: SlotKeys, neg_text: torch.Tensor, neg_image: torch.Tensor, neg_has_image: torch.Tensor,
                     limits: Thresholds) -> tuple[torch.Tensor, torch.Tensor]:
    """Raise each slot's thresholds until no negative (M rows of keys) passes its rules.

    A negative that passes is excluded by the threshold it needs the smaller raise of: the
    question threshold to its question similarity plus ``margin``, or, for a slot whose shared
    write may fire and a negative that does not show the slot's own image, the image threshold
    to its nearest-positive similarity plus ``margin``. A raise that would pass a slot's cap
    (see :meth:`SlotKeys.caps`) is not taken when the other one fits; where neither fits the
    thresholds stop at the caps and the negative stays (locality is preferred up
    to the point where the edit, or an ``also`` example, would stop matching). Returns new
    ``tau_text`` and ``tau_image`` (N,)."""
    if neg_text.shape[0] == 0 or slots.text.shape[0] == 0:
        return slots.tau_text, slots.tau_image
    cap_text, cap_image = slots.caps(limits)
    s = similarities(neg_text, neg_image, neg_has_image, slots)
    local, shared = _rules(s, neg_has_image, slots, limits)
    passing = local | shared
    need_text = s.text + limits.margin
    need_image = torch.where(s.pair, s.near + limits.margin, torch.full_like(s.near, 2.0))
    text_fits = need_text <= cap_text[None]
    image_fits = slots.shared[None] & s.pair & ~local & (need_image <= cap_image[None])
    unfit = torch.full_like(s.text, 9.0)
    cost_text = torch.where(text_fits, need_text - slots.tau_text[None], unfit)
    cost_image = torch.where(image_fits, need_image - slots.tau_image[None], unfit)
    by_text = passing & (cost_text <= cost_image)
    by_image = passing & ~by_text
    low = torch.full_like(s.text, -2.0)
    raise_text = torch.minimum(torch.where(by_text, need_text, low).max(dim=0).values, cap_text)
    raise_image = torch.minimum(torch.where(by_image, need_image, low).max(dim=0).values, cap_image)
    return torch.maximum(slots.tau_text, raise_text), torch.maximum(slots.tau_image, raise_image)


def passes(slots: SlotKeys, q: torch.Tensor, v: torch.Tensor, q_has_image: torch.Tensor,
           limits: Thresholds) -> torch.Tensor:
    """(B, N): whether input ``b`` passes slot ``n``'s local or shared rule."""
    local, shared = _rules(similarities(q, v, q_has_image, slots), q_has_image, slots, limits)
    return local | shared
