"""How large each site's preconditioners are once the reference prior is folded: the mean diagonal
of P_l and P_g of a ScopeEdit editor on the built-in model, before any edit. A branch's step is
its gradient times its P, so a P_g far below P_l means the shared branch barely writes.

    python scripts/preconditioner_scale.py                        # the builtin preset
    python scripts/preconditioner_scale.py 'lambda_shared=2000'   # with overrides
"""

from __future__ import annotations

import sys

import torch
from tune_builtin import parse  # scripts/ is on the path when this script runs

from editscope.config import load_preset
from editscope.editors.reference import load_reference
from editscope.editors.registry import build_editor
from editscope.models import load


def main(overrides: str = "") -> None:
    torch.set_num_threads(1)
    config = load_preset("builtin").replace(**parse(overrides))
    vlm = load("builtin")
    reference = load_reference("world", "builtin", config.reference_size) if config.reference_weight > 0 else None
    editor = build_editor("scopeedit", vlm, config, reference=reference)
    for path, site in editor.sites.items():
        local, shared = float(site.P_local.diagonal().mean()), float(site.P_shared.diagonal().mean())
        print(f"{path}: P_l {local:.2e}, P_g {shared:.2e}, ratio {local / shared:.0f}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
