"""Locality anchors of ScopeEdit and M-ORE (method.md: "anchors"): the deployment reference set
of probes, and folding the anchors of an edit into the local preconditioners of the groups it
wrote (a mixin of :class:`editscope.editors.scopeedit.core.RecursiveEditor`, whose sites,
groups and config it reads)."""

from __future__ import annotations

from typing import Sequence

import torch

from editscope.core.capture import capture_codes
from editscope.core.update import fold_code
from editscope.editors.transaction import Transaction
from editscope.types import ModelInputs, Probe


class Anchors:
    """The anchor set and the anchor fold of a recursive editor."""

    def add_locality_anchors(self, probes: Sequence[Probe]) -> None:
        """Add probes to the deployment reference set; ``anchors_per_edit`` of them are folded
        into the local preconditioners of the active groups after each edit (round robin)."""
        for probe in probes:
            self._anchor_set.append(self.vlm.encode(probe.image, probe.prompt, probe.answer))

    def _reference_anchors(self) -> list[ModelInputs]:
        n = min(self.config.method.anchors_per_edit, len(self._anchor_set))
        start = self.edits_applied * n
        return [self._anchor_set[(start + j) % len(self._anchor_set)] for j in range(n)]

    def _fold_anchors(self, anchors: list[ModelInputs], groups: set[str], tx: Transaction) -> None:
        paths = [p for g in groups for p in self.groups[g]]
        for anchor in anchors:
            with torch.no_grad(), capture_codes(
                {p: self.sites[p] for p in paths}, self._positions(anchor), self._projector_sites
            ) as capture:
                self.vlm.forward(anchor)
                for path in paths:
                    if path not in capture.sites:  # not reached (the projector on a text-only anchor)
                        continue
                    tx.touch(self.sites[path])
                    fold_code(self.sites[path], capture.sites[path].z, self.config.method.lambda_local)
