"""Baseline building blocks and the model restore point, on plain torch modules (no model files)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from editscope.editors.baselines import EDITORS, make_config
from editscope.editors.baselines.ft import DeltaLinear, FTConfig
from editscope.editors.baselines.grace import GraceCodebook, GraceConfig, label_id
from editscope.editors.baselines.lora import LoRAConfig, LoRALinear
from editscope.evaluation.restore import ModelRestorePoint


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(4, 3)


def test_wrappers_start_as_the_base_layer_exactly() -> None:
    base = _linear()
    x = torch.randn(2, 5, 4)
    expected = base(x)
    assert torch.equal(DeltaLinear(base)(x), expected)
    assert torch.equal(LoRALinear(base, 2, 1.0, torch.Generator().manual_seed(0))(x), expected)
    assert torch.equal(GraceCodebook(base)(x), expected)


def test_delta_and_lora_add_their_deltas() -> None:
    base = _linear()
    x = torch.randn(1, 2, 4)
    ft = DeltaLinear(base)
    with torch.no_grad():
        ft.delta.fill_(0.5)
    assert torch.allclose(ft(x), x @ (base.weight + 0.5).T + base.bias)
    lora = LoRALinear(base, 2, 3.0, torch.Generator().manual_seed(1))
    with torch.no_grad():
        lora.lora_B.fill_(0.25)
    expected = base(x) + 3.0 * x @ lora.lora_A.T @ lora.lora_B.T
    assert torch.allclose(lora(x), expected, atol=1e-6)


def test_grace_codebook_replaces_only_inside_the_radius() -> None:
    base = _linear()
    cb = GraceCodebook(base)
    key = torch.tensor([1.0, 0.0, 0.0, 0.0])
    cb.keys = key[None]
    cb.values = torch.tensor([[7.0, 8.0, 9.0]])
    cb.radii = torch.tensor([0.5])
    cb.labels = torch.tensor([label_id("x")])
    x = torch.stack([key, key + torch.tensor([0.0, 0.4, 0.0, 0.0]), key + torch.tensor([0.0, 0.6, 0.0, 0.0])])[None]
    out = cb(x)
    assert out[0, 0].tolist() == [7.0, 8.0, 9.0]
    assert out[0, 1].tolist() == [7.0, 8.0, 9.0]          # distance 0.4 <= 0.5
    assert torch.equal(out[0, 2], base(x)[0, 2])          # distance 0.6: untouched
    trained = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    with cb.training_rows(torch.tensor([0]), trained):
        out = cb(x)
        out.sum().backward()
    assert out[0, 0].tolist() == [1.0, 2.0, 3.0]
    assert trained.grad.tolist() == [[2.0, 2.0, 2.0]]    # served at two positions
    assert cb._training is None and cb(x)[0, 0].tolist() == [7.0, 8.0, 9.0]


def test_label_id_is_stable_and_normalised() -> None:
    assert label_id("Paris") == label_id(" paris ") != label_id("Rome")
    assert 0 <= label_id("x") < 2**63


@pytest.mark.parametrize("cls, bad", [
    (FTConfig, {"lr": 0}), (FTConfig, {"steps": 0}), (FTConfig, {"norm_constraint": -1.0}),
    (LoRAConfig, {"rank": 0}), (LoRAConfig, {"alpha": -1.0}), (LoRAConfig, {"n_last_layers": 1.5}),
    (GraceConfig, {"eps_init": 0.0}), (GraceConfig, {"positions": "everywhere"}), (GraceConfig, {"steps": -2}),
])
def test_configs_are_validated(cls, bad) -> None:
    with pytest.raises(ValueError):
        cls(**bad)


def test_make_config_rejects_unknown_keys_and_editors() -> None:
    assert make_config("lora", {"rank": 4}).rank == 4
    assert make_config("scopeedit", {"top_k": 2}).top_k == 2
    with pytest.raises(ValueError, match="unknown LoRAConfig key"):
        make_config("lora", {"rnak": 4})
    with pytest.raises(ValueError, match="unknown editor"):
        make_config("rome", {})
    assert set(EDITORS) == {"scopememory", "scopeedit", "more", "lora", "ft", "grace", "none"}


def test_restore_point_undoes_swaps_parameters_and_flags() -> None:
    model = nn.Sequential(_linear(0), nn.ReLU(), nn.Linear(3, 2)).eval()
    x = torch.randn(2, 4)
    expected = model(x)
    first, weight = model[0], model[0].weight
    point = ModelRestorePoint(model)
    model[0] = DeltaLinear(first)
    with torch.no_grad():
        model[0].delta.fill_(1.0)
    model[2].weight = nn.Parameter(torch.zeros(2, 3))
    model.requires_grad_(False)
    model.train()
    assert not torch.equal(model(x), expected)
    point.restore()
    assert model[0] is first and model[0].weight is weight
    assert torch.equal(model(x), expected)
    assert all(p.requires_grad for p in model.parameters())
    assert not model.training and not model[0].training
    assert point.modified_in_place() == []
    with torch.no_grad():
        model[0].weight.add_(0.0)
    assert point.modified_in_place() == ["0.weight"]
