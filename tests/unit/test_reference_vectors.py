"""The edit site reproduces values recorded from the authors' implementation of one site
(tests/fixtures/scopeedit_reference_vectors.json, copied from the project's shared fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from editscope.core.capture import Positions, capture_codes
from editscope.core.site import EditSite
from editscope.core.update import fold_code, local_update, shared_update

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "scopeedit_reference_vectors.json"
CASES = json.loads(FIXTURE.read_text())["cases"]


def t(value) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


def close(actual: torch.Tensor, expected, what: str) -> None:
    expected = t(expected)
    scale = max(1.0, float(expected.abs().max()))
    err = float((actual.detach() - expected).abs().max())
    assert err <= 1e-5 * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def build_site(case: dict) -> EditSite:
    linear = nn.Linear(case["d_in"], case["d_out"], bias=True)
    site = EditSite(linear, case["rank_local"], case["rank_shared"], case["scaling"], seed=0).double()
    with torch.no_grad():
        linear.weight.copy_(t(case["base_weight"]))
        linear.bias.copy_(t(case["base_bias"]))
        site.A_local.copy_(t(case["A_local"]))
        site.A_shared.copy_(t(case["A_shared"]))
    return site


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_site_reproduces_reference_steps(case: dict) -> None:
    site = build_site(case)
    for i, step in enumerate(case["steps"]):
        tag = f"{case['name']} step {i}"
        for name in ("B_local", "B_shared", "P_local", "P_shared"):
            close(getattr(site, name), step[f"{name}_before"], f"{tag} {name}_before")
        x = t(step["x"])
        positions = Positions(
            target=torch.tensor(step["target_positions"]), image=torch.tensor(step["image_positions"])
        )
        site.B_local.requires_grad_(True)
        site.B_shared.requires_grad_(True)
        with capture_codes({"site": site}, positions, key_sites=frozenset({"site"})) as capture:
            output = site(x)
        close(output, step["output"], f"{tag} output")
        loss = (output[positions.target] * t(step["loss_weights"])).sum()
        grad_local, grad_shared = torch.autograd.grad(loss, [site.B_local, site.B_shared])
        site.B_local.requires_grad_(False)
        site.B_shared.requires_grad_(False)
        close(grad_local, step["grad_B_local"], f"{tag} grad_B_local")
        close(grad_shared, step["grad_B_shared"], f"{tag} grad_B_shared")

        record = capture.sites["site"]
        close(record.z, step["code_local"], f"{tag} code_local")
        close(site.A_shared @ record.k_text, step["u_text"], f"{tag} u_text")
        close(site.A_shared @ record.k_image, step["u_image"], f"{tag} u_image")

        local_update(site, grad_local, record.z, case["eta"], case["lambda"])
        close(site.B_local, step["B_local_after"], f"{tag} B_local_after")
        close(site.P_local, step["P_local_after"], f"{tag} P_local_after")

        gate = shared_update(
            site,
            grad_shared,
            record.k_text,
            record.k_image,
            eta=case["eta_shared"],
            lam=case["lambda_shared"],
            tau=case["tau"],
            beta=case["beta"],
        )
        assert bool(gate.g > 0) == step["shared_updated"]
        close(gate.cos, step["gate"]["cos"], f"{tag} cos")
        close(gate.support, step["gate"]["support"], f"{tag} support")
        close(gate.g, step["gate"]["g"], f"{tag} g")
        close(gate.q, step["q"], f"{tag} q")
        close(site.B_shared, step["B_shared_after"], f"{tag} B_shared_after")
        close(site.P_shared, step["P_shared_after"], f"{tag} P_shared_after")

        anchor_positions = Positions(
            target=torch.tensor(step["anchor_target_positions"]), image=torch.zeros(0, dtype=torch.long)
        )
        with torch.no_grad(), capture_codes({"site": site}, anchor_positions) as anchor:
            site(t(step["anchor_x"]))
        close(anchor.sites["site"].z, step["anchor_code_local"], f"{tag} anchor_code_local")
        fold_code(site, anchor.sites["site"].z, case["lambda"])
        close(site.P_local, step["P_local_after_anchor"], f"{tag} P_local_after_anchor")
