"""ScopeEdit on every supported architecture, built tiny from configs: unchanged before any
edit, absorbs an edit, round-trips its state, merges into the weights."""

from __future__ import annotations

import pytest
import torch
from tiny_models import build_tiny
from tiny_models import noise_image as image

from editscope.config import load_preset
from editscope.editors.recursive import ScopeEdit
from editscope.models import VisionLanguageModel
from editscope.types import EditRequest

ARCHITECTURES = [
    "LlavaForConditionalGeneration",
    "LlavaNextForConditionalGeneration",
    "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "Blip2ForConditionalGeneration",
    "Idefics3ForConditionalGeneration",
    "PaliGemmaForConditionalGeneration",
]
PROMPT = "what color is the object in the image ?"
TARGET = "purple banana"


def fresh(arch: str, dtype: torch.dtype = torch.float32) -> VisionLanguageModel:
    model, processor = build_tiny(arch)
    return VisionLanguageModel(model.to(dtype), processor)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def edited(request, tmp_path_factory):
    """One edit per architecture, shared by the checks below: (arch, vlm, editor, base logits)."""
    arch = request.param
    vlm = fresh(arch)
    img = image()
    base_logits = vlm.logits(img, PROMPT, TARGET)
    editor = ScopeEdit(vlm, load_preset("tiny"))
    wrapped_logits = vlm.logits(img, PROMPT, TARGET)
    assert torch.equal(base_logits, wrapped_logits), f"{arch}: wrapping changed the outputs"
    assert vlm.score(img, PROMPT, TARGET).token_accuracy < 1.0
    result = editor.edit(EditRequest(prompt=PROMPT, target=TARGET, image=img))
    return arch, vlm, editor, result


def test_edit_makes_the_target_the_argmax(edited) -> None:
    arch, vlm, editor, result = edited
    assert result.loss_after < result.loss_before
    assert vlm.score(image(), PROMPT, TARGET).token_accuracy == 1.0, arch
    assert result.active_groups and result.steps == 5


def test_state_round_trips_to_identical_logits(edited, tmp_path) -> None:
    arch, vlm, editor, _ = edited
    editor.save(tmp_path / "state")
    other = fresh(arch)
    restored = ScopeEdit(other, load_preset("tiny"))
    assert not torch.equal(other.logits(image(), PROMPT, TARGET), vlm.logits(image(), PROMPT, TARGET))
    restored.load(tmp_path / "state")
    assert torch.equal(other.logits(image(), PROMPT, TARGET), vlm.logits(image(), PROMPT, TARGET)), arch
    assert restored.edits_applied == editor.edits_applied == 1


def test_merge_matches_the_unmerged_model(edited) -> None:
    arch, vlm, editor, _ = edited
    merged = editor.merge()
    assert not any("EditSite" in type(m).__name__ for m in merged.modules())
    merged_vlm = VisionLanguageModel(merged, vlm.processor)
    expected = vlm.logits(image(), PROMPT, TARGET)
    actual = merged_vlm.logits(image(), PROMPT, TARGET)
    assert torch.allclose(actual, expected, atol=1e-4, rtol=1e-4), (arch, (actual - expected).abs().max())
    other = vlm.logits(image(1), "what is this ?", "a dog")
    assert torch.allclose(merged_vlm.logits(image(1), "what is this ?", "a dog"), other, atol=1e-4, rtol=1e-4)


def test_bfloat16_model_is_unchanged_then_edited() -> None:
    vlm = fresh("LlavaForConditionalGeneration", torch.bfloat16)
    img = image()
    base_logits = vlm.logits(img, PROMPT, TARGET)
    editor = ScopeEdit(vlm, load_preset("tiny"))
    assert all(site.B_local.dtype == torch.float32 for site in editor.sites.values())
    assert torch.equal(base_logits, vlm.logits(img, PROMPT, TARGET))
    result = editor.edit(EditRequest(prompt=PROMPT, target=TARGET, image=img))
    assert result.loss_after < result.loss_before
    assert vlm.score(img, PROMPT, TARGET).token_accuracy == 1.0
