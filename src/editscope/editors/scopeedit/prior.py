"""The reference prior (beyond the paper; docs/method.md, "Reference prior"): before the first
edit, the second moment of every site's inputs over a reference set of ordinary inputs is
folded into ``P_l`` and ``P_g`` as if ``weight`` codes had been folded, so that later edits are
damped along the directions those inputs use most (a corpus prior in the spirit of MEMIT's key
covariance). The editor registry (``editscope.editors.registry.build_editor``) hands the
reference set over; ``editscope.editors.reference.load_reference`` builds one."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from editscope.core.linalg import fold_second_moment
from editscope.core.site import EditSite
from editscope.editors.scopeedit.options import check_int, check_number, option
from editscope.editors.scopeedit.plugin import Plugin, Write
from editscope.types import ModelInputs, Probe

if TYPE_CHECKING:
    from editscope.editors.scopeedit.core import RecursiveEditor


@dataclass(frozen=True)
class PriorConfig:
    """The reference prior: a reference set's input statistics folded into P before the first edit."""

    weight: float = option(1.0, "the prior counts as this many folded codes (the reference set's second moment "
                                "times weight)")
    size: int = option(256, "how many reference inputs the bench and the store fold")

    def __post_init__(self) -> None:
        check_number("prior.weight", self.weight, positive=True)
        check_int("prior.size", self.size, 1)


class Prior(Plugin):
    name = "prior"
    config: PriorConfig

    def before_edit(self, job: Write) -> None:
        editor = self.editor
        if not editor.prior_in_p and editor.edits_applied == 0:
            warnings.warn(
                f"prior.weight is {self.config.weight} but no reference set was folded: "
                "call fold_reference(probes, config.prior.weight) before the first edit "
                "(the bench and the store do it themselves)", stacklevel=4,
            )


def fold_reference(editor: "RecursiveEditor", examples: Sequence[Probe | ModelInputs], weight: float,
                   progress: bool = False) -> None:
    """Fold the input statistics of a reference set into the preconditioners of every site.

    Each example is forwarded once without gradient; at every site and every position the
    branch codes ``A_l x`` and ``A_g x`` are taken, and ``weight`` times their second moment
    (the mean over examples of the mean over positions of ``c c^T``) is folded into ``P_l`` and
    ``P_g`` as if that many codes had been folded one by one. Nothing is written until every
    example has been forwarded."""
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight > 0:
        raise ValueError(f"the reference weight must be a positive number, got {weight!r}")
    if not examples:
        raise ValueError("the reference set is empty")
    encoded = [e if isinstance(e, ModelInputs) else editor.vlm.encode(e.image, e.prompt, e.answer)
               for e in examples]
    moments: dict[tuple[str, str], torch.Tensor] = {}

    def hook_for(path: str, hooked: EditSite):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(hooked.A_local.dtype)
            for branch, basis in (("local", hooked.A_local), ("shared", hooked.A_shared)):
                if basis.shape[0] == 0:
                    continue
                codes = hooked._code(x, basis).double()
                moment = codes.T @ codes / codes.shape[0]
                key = (path, branch)
                moments[key] = moments[key] + moment if key in moments else moment
        return hook

    handles = [s.register_forward_pre_hook(hook_for(p, s)) for p, s in editor.sites.items()]
    try:
        with torch.no_grad():
            for inputs in tqdm(encoded, desc="reference", disable=not progress, leave=False):
                editor.vlm.forward(inputs)
    finally:
        for handle in handles:
            handle.remove()
    scale = float(weight) / len(encoded)
    if not all(bool(torch.isfinite(m).all()) for m in moments.values()):
        raise ValueError("the reference set produced non-finite activations; nothing was folded")
    with torch.no_grad():
        for (path, branch), moment in moments.items():
            site = editor.sites[path]
            p = site.P_local if branch == "local" else site.P_shared
            p.copy_(fold_second_moment(p, scale * moment, editor.lam(branch)))
