"""What a ScopeEdit or M-ORE editor does besides editing: its configuration and the plug-ins it
installs, the reference prior, the state, reset, remove and merge (a mixin of :class:`editscope.editors.scopeedit.core.RecursiveEditor`,
whose sites, config and hooks it reads)."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from editscope.config import ScopeEditConfig
from editscope.editors.scopeedit import prior, state
from editscope.editors.scopeedit.plugins import install
from editscope.types import ModelInputs, Probe


class Lifecycle:
    """The configuration, reference prior, state, reset, remove and merge of a recursive editor."""

    @property
    def config(self) -> ScopeEditConfig:
        return self._config

    @config.setter
    def config(self, config: ScopeEditConfig) -> None:
        """A new configuration installs its options' plug-ins; one installed before keeps its state."""
        if not isinstance(config, ScopeEditConfig):
            raise TypeError(f"{type(self).__name__} takes a ScopeEditConfig, got {type(config).__name__}")
        config = self._variant(config)
        self.hooks = install(self, config, self.hooks)
        self._config = config

    @property
    def options(self) -> dict[str, Any]:
        """The installed options' plug-ins, by section name (``reedit``, ``rehearsal``, ...)."""
        return self.hooks.by_name()

    def lam(self, branch: str) -> float:
        """The fold's ``lambda`` of a branch ("local" | "shared")."""
        return self.config.method.lambda_local if branch == "local" else self.config.shared.lambda_shared

    def fold_reference(self, examples: Sequence[Probe | ModelInputs], weight: float,
                       progress: bool = False) -> None:
        """Fold a reference set's input statistics into every site's preconditioners
        (:func:`editscope.editors.scopeedit.prior.fold_reference`); before the first edit,
        :meth:`reset` returns to the preconditioners it leaves."""
        prior.fold_reference(self, examples, weight, progress)
        self.prior_in_p = True
        if self.edits_applied == 0:
            self._initial_p = {p: (s.P_local.clone(), s.P_shared.clone()) for p, s in self.sites.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return state.state_dict(self)

    def state_bytes(self) -> int:
        return state.state_bytes(self)

    def load_state_dict(self, saved: dict[str, torch.Tensor]) -> None:
        state.load_state_dict(self, saved)
        self.prior_in_p = True  # a saved state carries whatever prior its editor had
        if self.edits_applied == 0 and not all(
            torch.equal(s.P_local, torch.eye(s.rank_local, device=s.P_local.device)) for s in self.sites.values()
        ):  # an initial state with a prior in it: reset() returns here
            self._initial_p = {p: (s.P_local.clone(), s.P_shared.clone()) for p, s in self.sites.items()}

    def config_dict(self) -> dict[str, Any]:
        return {"editor": self.name, "config": self.config.to_dict()}

    def reset(self) -> None:
        """Forget every edit: ``B = 0``, and ``P`` back to ``I``, or to the reference prior
        where this editor folded one (a prior that came with a loaded state is not known apart
        from the edits folded after it: ``P = I`` then)."""
        with torch.no_grad():
            for path, site in self.sites.items():
                site.B_local.zero_()
                site.B_shared.zero_()
                p_local, p_shared = self._initial_p.get(path, (None, None))
                site.P_local.copy_(torch.eye(site.rank_local, device=site.P_local.device) if p_local is None else p_local)
                site.P_shared.copy_(torch.eye(site.rank_shared, device=site.P_shared.device) if p_shared is None
                                    else p_shared)
        self.edits_applied = 0
        self.hooks.reset()
        self.prior_in_p = bool(self._initial_p)

    def remove(self) -> nn.Module:
        """Take the sites out of the model (which becomes the base model again) and return it."""
        for path, site in self.sites.items():
            self.model.set_submodule(path, site.base_layer)
        self.sites = {}
        return self.model

    def merge(self) -> nn.Module:
        """A copy of the model with ``W + s (B_l A_l + B_g A_g)`` in every site's weight and no
        editor modules: a plain Hugging Face model. The live editor is not changed."""
        weights = {}
        for path, site in self.sites.items():
            with torch.no_grad():
                weight = site.merged_weight()
            if not torch.isfinite(weight).all():
                raise ValueError(f"merging {path} gives non-finite weights; nothing was merged")
            weights[path] = weight
        merged = copy.deepcopy(self.model)
        with torch.no_grad():
            for path, weight in weights.items():
                linear = merged.get_submodule(path).base_layer
                linear.weight.copy_(weight.to(linear.weight.dtype))
                merged.set_submodule(path, linear)
        return merged
