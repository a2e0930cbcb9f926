"""Folding an edit once (beyond the paper): every step of an edit writes with the ``P`` from
before the edit, and the codes of its last step are folded once, at the end, each with weight
``weight`` (as if folded that many times), so that how hard an edit writes and how strongly
later edits keep off it are set apart. The method (``ScopeEditConfig.history = None``) folds the
code of every step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from editscope.core.linalg import sherman_morrison
from editscope.editors.scopeedit.options import check_choice, check_number, option
from editscope.editors.scopeedit.plugin import Hooks, Plugin, Write

if TYPE_CHECKING:
    from editscope.core.capture import Capture, SiteCapture
    from editscope.core.gate import Gate
    from editscope.editors.transaction import Transaction

CODES = ("mean", "target", "all")
SITES = ("active", "all")


@dataclass(frozen=True)
class HistoryConfig:
    """Folding an edit's codes once, after its steps, with a weight."""

    weight: float = option(1.0, "each folded code counts as this many (the code scaled by its square root)")
    codes: str = option("mean", "'mean': the edit's code z (the mean over its target positions, as in the "
                                "method); 'target': the code of each target position; 'all': of every position")
    sites: str = option("active", "'active': the sites the edit wrote (as in the method); 'all': every site "
                                  "its forward reached")

    def __post_init__(self) -> None:
        check_number("history.weight", self.weight, positive=True)
        check_choice("history.codes", self.codes, CODES)
        check_choice("history.sites", self.sites, SITES)


class History(Plugin):
    name = "history"
    config: HistoryConfig

    def fold_policy(self, job: Write, hooks: Hooks) -> "EditFold":
        return EditFold(self, hooks, job)


class EditFold:
    """The fold policy of one write: keep each site's last code, fold it once in :meth:`finish`."""

    fold_each_step = False

    def __init__(self, plugin: History, hooks: Hooks, job: Write) -> None:
        self.config, self.editor, self.hooks, self.job = plugin.config, plugin.editor, hooks, job
        self.codes = None if self.config.codes == "mean" else self.config.codes
        self.pending: dict[tuple[str, str], torch.Tensor] = {}  # (site path, branch) -> code(s)

    def local(self, path: str, record: "SiteCapture", code: torch.Tensor) -> None:
        self.pending[(path, "local")] = (code if record.codes is None else record.codes).detach().clone()

    def shared(self, path: str, gate: "Gate") -> None:
        # the last step whose gate was open gives the code to fold
        last = self.pending.get((path, "shared"), torch.zeros_like(gate.q))
        self.pending[(path, "shared")] = torch.where(gate.g > 0, gate.q.detach(), last)

    def reached(self, capture: "Capture") -> None:
        if self.config.sites == "all":  # the sites this step did not write too
            for path, record in capture.sites.items():
                self.pending[(path, "local")] = (record.z if record.codes is None else record.codes).detach().clone()

    def finish(self, tx: "Transaction") -> None:
        """Fold each written site's last code (or each of its position codes) once, with weight
        ``weight``; a zero code (a gate never open) leaves ``P`` as it is."""
        weight = self.config.weight ** 0.5
        with torch.no_grad():
            for (path, branch), code in sorted(self.pending.items()):
                site = self.editor.sites[path]
                tx.touch(site)
                p, lam = (site.P_local if branch == "local" else site.P_shared), self.editor.lam(branch)
                for row in (weight * code).to(p.dtype).reshape(-1, p.shape[0]):
                    p.copy_(sherman_morrison(p, row, lam))
                    self.hooks.on_fold(self.job, path, branch, row.detach().clone())
