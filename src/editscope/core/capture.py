"""Temporary capture of what the edit sites see during one forward pass.

The caller states explicitly which positions are target tokens and which are image tokens;
the hooks exist only inside the ``capture_codes`` context and are removed in ``finally``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import torch

from editscope.core.site import EditSite


@dataclass(frozen=True)
class Positions:
    """Which token positions of the (batch of one) sequence to average over.

    ``target`` (n,): positions whose outputs predict the target tokens; ``image`` (m,):
    image-token positions (may be empty).
    """

    target: torch.Tensor
    image: torch.Tensor


@dataclass
class SiteCapture:
    """What one site recorded: the local code ``z`` (r_l,) and, for decoder sites, the text key
    ``k_text`` (d_in,) and the image key ``k_image`` (d_in,) or ``None`` without image tokens.
    ``codes`` (n, r_l): the local codes of single positions, where the capture asked for them
    (the target positions, or every position)."""

    z: torch.Tensor
    k_text: torch.Tensor | None = None
    k_image: torch.Tensor | None = None
    codes: torch.Tensor | None = None


@dataclass
class Capture:
    sites: dict[str, SiteCapture] = field(default_factory=dict)


def _record(site: EditSite, x: torch.Tensor, positions: Positions | None, keys: bool,
            codes: str | None = None) -> SiteCapture:
    x = x.detach().to(site.A_local.dtype)
    if positions is None:  # projector: every position of its input
        flat = site.local_code(x.reshape(-1, x.shape[-1]))
        return SiteCapture(z=flat.mean(0), codes=flat if codes else None)
    seq = x.reshape(-1, x.shape[-2], x.shape[-1])[0]
    target = seq.index_select(0, positions.target.to(seq.device))
    target_codes = site.local_code(target)
    captured = SiteCapture(z=target_codes.mean(0))
    if codes == "target":
        captured.codes = target_codes
    elif codes == "all":
        captured.codes = site.local_code(seq)
    if keys:
        captured.k_text = target.mean(0)
        if positions.image.numel():
            captured.k_image = seq.index_select(0, positions.image.to(seq.device)).mean(0)
    return captured


@contextmanager
def capture_codes(
    sites: Mapping[str, EditSite],
    positions: Positions,
    projector_sites: frozenset[str] = frozenset(),
    key_sites: frozenset[str] = frozenset(),
    codes: str | None = None,
) -> Iterator[Capture]:
    """Record codes (and keys for ``key_sites``) of every site during the forward passes run
    inside the context. Sites in ``projector_sites`` average over all their positions.
    ``codes`` ("target" | "all" | None) also keeps the local codes of single positions: the
    target positions, or every position (a projector site: every position either way)."""
    capture = Capture()
    handles = []

    def make_hook(name: str, site: EditSite):
        site_positions = None if name in projector_sites else positions
        wants_keys = name in key_sites

        def hook(module: torch.nn.Module, args: tuple) -> None:
            capture.sites[name] = _record(site, args[0], site_positions, wants_keys, codes)

        return hook

    try:
        for name, site in sites.items():
            handles.append(site.register_forward_pre_hook(make_hook(name, site)))
        yield capture
    finally:
        for handle in handles:
            handle.remove()
