"""Stopping and step growth (beyond the paper): an edit ends at the first step whose forward
finds the target's loss below ``stop_loss`` (before that step's backward), and the ``k``-th
step of an edit (k = 0, 1, ...) writes with its learning rates times ``eta_growth ** k``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from editscope.editors.scopeedit.options import check_number, option
from editscope.editors.scopeedit.plugin import Plugin


@dataclass(frozen=True)
class StoppingConfig:
    """Stopping rule and step growth: ``steps_per_edit`` becomes the most steps an edit takes."""

    stop_loss: float = option(0.0, "an edit stops at the first step whose forward finds the target's mean NLL "
                                   "below this, before writing (0: every edit takes steps_per_edit steps)")
    eta_growth: float = option(1.0, "the k-th step of an edit (k = 0, 1, ...) writes with eta * eta_growth ** k, "
                                    "so an edit the first steps did not absorb moves faster (1: off)")

    def __post_init__(self) -> None:
        check_number("stopping.stop_loss", self.stop_loss, non_negative=True)
        check_number("stopping.eta_growth", self.eta_growth, positive=True)
        if self.stop_loss == 0 and self.eta_growth == 1:
            raise ValueError("ScopeEditConfig.stopping with stop_loss 0 and eta_growth 1 changes nothing: "
                             "leave the section out (None, the method's fixed steps)")


class Stopping(Plugin):
    name = "stopping"
    config: StoppingConfig

    def stop(self, loss: torch.Tensor) -> bool:
        # absorbed: stop before the backward and before writing more (one host sync per step)
        return self.config.stop_loss > 0 and float(loss.detach()) < self.config.stop_loss

    def step_scale(self, taken: int) -> float:
        return self.config.eta_growth ** (taken - 1)  # the step of an edit not yet absorbed grows
