"""Filled site ranks (beyond the paper): each site's local rank is the whole of its input width
not taken by the shared basis (``d_in - rank_shared``; M-ORE ``d_in``), so a wide site (an MLP
down projection) can hold as many independent facts as its input has directions. The scaling
stays ``alpha / (rank_local + rank_shared)`` at every site. Meant for small models: ``P`` is
(d_in x d_in) at a filled site."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from editscope.editors.scopeedit.plugin import Plugin


@dataclass(frozen=True)
class SiteRankConfig:
    """Filled site ranks: every linear site's local rank is its input width beside the shared basis."""


class SiteRank(Plugin):
    name = "site_rank"
    config: SiteRankConfig

    def site_rank(self, path: str, base: nn.Module, rank_local: int, rank_shared: int) -> int:
        if not isinstance(base, nn.Linear):
            return rank_local
        filled = base.in_features - rank_shared
        if filled < 1:
            raise ValueError(
                f"site_rank fill: {path} has input width {base.in_features}, no room beside rank_shared {rank_shared}"
            )
        return filled
