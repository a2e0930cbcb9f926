"""The baseline editors on the tiny LLaVA: sites, GRACE codebook rules, all-or-nothing edits,
state round trips, and putting the base model back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import build_tiny

from editscope.editors.base import EditRejected
from editscope.editors.baselines import build_editor, make_config
from editscope.editors.baselines.ft import DeltaLinear
from editscope.editors.baselines.grace import GraceCodebook, label_id
from editscope.editors.baselines.lora import LoRALinear
from editscope.evaluation.restore import ModelRestorePoint
from editscope.models import VisionLanguageModel
from editscope.types import EditRequest

PROMPT = "what color is the object in the image ?"


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, size=(32, 32, 3), dtype=np.uint8))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vlm() -> VisionLanguageModel:
    model, processor = build_tiny("LlavaForConditionalGeneration", seed=0)
    return VisionLanguageModel(model, processor)


@pytest.fixture()
def restored(vlm: VisionLanguageModel):
    point = ModelRestorePoint(vlm.model)
    yield vlm
    point.restore()


def test_sites(restored: VisionLanguageModel) -> None:
    vlm = restored
    expected = [p for paths in vlm.site_paths(2, True).values() for p in paths]
    lora = build_editor("lora", vlm, make_config("lora", {"n_last_layers": 2, "include_projector": True}))
    assert sorted(lora.sites) == sorted(expected)
    assert all(isinstance(vlm.model.get_submodule(p), LoRALinear) for p in expected)
    lora.remove()
    ft = build_editor("ft", vlm, make_config("ft", {"layer": -1}))
    n = len(vlm.decoder_layers())
    assert ft.path.endswith(f"layers.{n - 1}.mlp.down_proj")
    assert isinstance(vlm.model.get_submodule(ft.path), DeltaLinear)
    ft.remove()
    grace = build_editor("grace", vlm, make_config("grace", {"layer": 0}))
    assert grace.path.endswith("layers.0.mlp.down_proj")
    assert isinstance(vlm.model.get_submodule(grace.path), GraceCodebook)


def test_grace_codebook_rules(restored: VisionLanguageModel) -> None:
    grace = build_editor("grace", restored, make_config("grace", {"eps_init": 1.0}))
    d_in = grace.codebook.keys.shape[1]
    d_out = grace.codebook.values.shape[1]
    key = torch.zeros(d_in, device=grace.codebook.keys.device)
    out = torch.zeros(d_out, device=grace.codebook.keys.device)
    a, b = label_id("a"), label_id("b")
    with torch.no_grad():
        assert grace._place(key, a, out, n_old=0) == (0, out)                    # empty: add
        far = key.clone()
        far[0] = 5.0
        assert grace._place(far, a, out, n_old=1)[0] == 1                        # 5 > 1 + 1: add
        near = key.clone()
        near[0] = 1.5
        assert grace._place(near, a, out, n_old=2)[0] == 0                       # same label: widen
        assert grace.codebook.radii[0].item() == pytest.approx(1.5)
        other = key.clone()
        other[0] = -2.0
        row, _ = grace._place(other, b, out, n_old=3)                            # other label: split
        assert row == 2
        assert grace.codebook.radii[0].item() == pytest.approx(1.0)
        assert grace.codebook.radii[2].item() == pytest.approx(1.0)
        row, _ = grace._place(far, b, out, n_old=3)                              # same key, new label
        assert row == 1 and int(grace.codebook.labels[1]) == b
    assert grace.size == 3


def test_edits_change_the_answer_and_state_round_trips(restored: VisionLanguageModel) -> None:
    vlm = restored
    request = EditRequest(PROMPT, "purple banana", _image(0))
    edit_input = (request.image, request.prompt, request.target)
    base = vlm.logits(*edit_input)
    for name in ("ft", "lora", "grace"):
        point = ModelRestorePoint(vlm.model)
        editor = build_editor(name, vlm, make_config(name, {}))
        before = vlm.score(*edit_input)
        result = editor.edit(request)
        after = vlm.score(*edit_input)
        assert result.loss_after < result.loss_before - 0.1, name
        assert after.mean_logprob > before.mean_logprob + 0.1, name
        assert after.token_accuracy > before.token_accuracy, name
        state = editor.state_dict()
        edited = vlm.logits(*edit_input)
        point.restore()
        assert torch.equal(vlm.logits(*edit_input), base), name
        fresh = build_editor(name, vlm, make_config(name, {}))
        fresh.load_state_dict(state)
        assert torch.equal(vlm.logits(*edit_input), edited), name
        assert fresh.state_bytes() == sum(t.numel() * t.element_size() for t in state.values())
        point.restore()


def test_non_finite_edit_is_rejected_and_state_unchanged(restored: VisionLanguageModel) -> None:
    vlm = restored
    for name, values in (("ft", {"lr": float("inf")}), ("lora", {"lr": float("inf")}), ("grace", {"lr": float("inf")})):
        point = ModelRestorePoint(vlm.model)
        editor = build_editor(name, vlm, make_config(name, values))
        state = editor.state_dict()
        with pytest.raises(EditRejected):
            editor.edit(EditRequest(PROMPT, "purple banana", _image(1)))
        after = editor.state_dict()
        assert set(after) == set(state)
        assert all(torch.equal(after[k], state[k]) for k in state), name
        assert editor.edits_applied == 0
        point.restore()


def test_none_changes_nothing(restored: VisionLanguageModel) -> None:
    vlm = restored
    request = EditRequest(PROMPT, "purple banana", _image(0))
    before = vlm.logits(request.image, request.prompt, request.target)
    editor = build_editor("none", vlm)
    result = editor.edit(request)
    assert result.loss_after == result.loss_before
    assert torch.equal(vlm.logits(request.image, request.prompt, request.target), before)
    assert editor.state_dict() == {} and editor.state_bytes() == 0
