"""VisionLanguageModel on tiny random models of every supported architecture (built offline)."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from editscope.models import VisionLanguageModel, load
from tiny_models import ARCHITECTURES, IMAGE_SIZE, build_tiny

# PaliGemma's processor builds its BC ``labels`` with an np.array call numpy 2 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PROMPT = "what color is the object?"
TARGET = "red green"

# Image tokens each tiny model puts in ``input_ids`` for one image (derived from the configs in
# tiny_models.py, so that a wrong expansion fails here and not only inside the model).
# All for a square IMAGE_SIZE image, patch 8 -> a 4x4 patch grid.
EXPECTED_IMAGE_TOKENS = {
    "LlavaForConditionalGeneration": 16,  # patches, CLS dropped ("default" strategy)
    "LlavaNextForConditionalGeneration": 16 + 16 + 4,  # base image + one 4x4 tile + a newline per row
    "Qwen2VLForConditionalGeneration": 16 // 4,  # t*h*w / merge^2
    "Qwen2_5_VLForConditionalGeneration": 16 // 4,
    "Blip2ForConditionalGeneration": 4,  # num_query_tokens
    "Idefics3ForConditionalGeneration": 16 // 4,  # patches / scale_factor^2
    "PaliGemmaForConditionalGeneration": 16,
}


def _image(seed: int, size: tuple[int, int] = (48, 40), mode: str = "RGB") -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels, mode="RGB")
    return image if mode == "RGB" else image.convert(mode)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two
    spinning threads make each small matmul up to 100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def vlm(request: pytest.FixtureRequest) -> VisionLanguageModel:
    model, processor = build_tiny(request.param, seed=0)
    return VisionLanguageModel(model, processor)


def test_encode_positions(vlm: VisionLanguageModel) -> None:
    inputs = vlm.encode(_image(0, size=(IMAGE_SIZE, IMAGE_SIZE)), PROMPT, TARGET)
    ids = inputs.input_ids[0]
    expected_target = vlm.tokenizer(" " + TARGET, add_special_tokens=False)["input_ids"]
    n = len(expected_target)
    assert inputs.target_ids.tolist() == expected_target
    assert ids[-n:].tolist() == expected_target
    assert inputs.target_positions.tolist() == list(range(len(ids) - n - 1, len(ids) - 1))
    assert ids[inputs.target_positions + 1].tolist() == expected_target

    image_mask = ids == vlm.image_token_id
    assert inputs.image_positions.tolist() == image_mask.nonzero().flatten().tolist()
    assert inputs.image_positions.numel() == EXPECTED_IMAGE_TOKENS[vlm.spec.name]
    assert inputs.tensors["attention_mask"].shape == inputs.input_ids.shape
    assert "pixel_values" in inputs.tensors


def test_architecture_extra_inputs(vlm: VisionLanguageModel) -> None:
    inputs = vlm.encode(_image(0), PROMPT, TARGET)
    ids = inputs.input_ids
    n_target = inputs.target_ids.numel()
    if "mm_token_type_ids" in vlm.spec.extra_inputs:
        assert torch.equal(inputs.tensors["mm_token_type_ids"], (ids == vlm.image_token_id).int())
        grid = inputs.tensors["image_grid_thw"]
        assert inputs.image_positions.numel() == int(grid.prod()) // 4
    if "token_type_ids" in vlm.spec.extra_inputs:
        token_type_ids = inputs.tensors["token_type_ids"][0]
        assert token_type_ids[-n_target:].tolist() == [1] * n_target
        assert token_type_ids[:-n_target].tolist() == [0] * (ids.shape[1] - n_target)
    if not vlm.spec.extra_inputs:
        assert "token_type_ids" not in inputs.tensors and "mm_token_type_ids" not in inputs.tensors
    assert "labels" not in inputs.tensors


def test_qwen2_5_needs_mm_token_type_ids() -> None:
    """The trap the spec guards against: without mm_token_type_ids Qwen2.5-VL silently uses
    1-D positions, so the logits change."""
    model, processor = build_tiny("Qwen2_5_VLForConditionalGeneration")
    vlm = VisionLanguageModel(model, processor)
    inputs = vlm.encode(_image(0), PROMPT, TARGET)
    without = {k: v for k, v in inputs.tensors.items() if k != "mm_token_type_ids"}
    with torch.no_grad():
        proper = model(**inputs.tensors).logits
        silent = model(**without).logits
    assert (proper - silent).abs().max().item() > 1e-4


def test_prompt_only_encoding_has_no_target(vlm: VisionLanguageModel) -> None:
    with_target = vlm.encode(_image(0), PROMPT, TARGET)
    prompt_only = vlm.encode(_image(0), PROMPT, None)
    assert prompt_only.target_ids.numel() == 0 and prompt_only.target_positions.numel() == 0
    n = with_target.target_ids.numel()
    assert torch.equal(prompt_only.input_ids, with_target.input_ids[:, :-n])


def test_encoding_with_the_end_appends_the_end_token(vlm: VisionLanguageModel) -> None:
    plain = vlm.encode(_image(0), PROMPT, TARGET)
    ended = vlm.encode(_image(0), PROMPT, TARGET, end=True)
    assert vlm.end_id is not None and vlm.end_id in vlm._eos_ids()
    assert ended.target_ids.tolist() == plain.target_ids.tolist() + [vlm.end_id]
    assert ended.target_positions.tolist() == plain.target_positions.tolist() + [plain.length - 1]
    assert torch.equal(ended.tensors["input_ids"][0, :-1], plain.tensors["input_ids"][0])


def test_score_matches_manual_argmax(vlm: VisionLanguageModel) -> None:
    inputs = vlm.encode(_image(1), PROMPT, TARGET)
    with torch.no_grad():
        logits = vlm.model(**inputs.tensors).logits[0].float()
    rows = logits[inputs.target_positions]
    manual_pred = rows.argmax(-1)
    manual_lp = torch.log_softmax(rows, -1)[torch.arange(len(rows)), inputs.target_ids]

    score = vlm.score(_image(1), PROMPT, TARGET)
    assert score.target_ids == tuple(inputs.target_ids.tolist())
    assert score.predicted_ids == tuple(manual_pred.tolist())
    expected_accuracy = (manual_pred == inputs.target_ids).float().mean().item()
    assert score.token_accuracy == pytest.approx(expected_accuracy)
    assert torch.allclose(torch.tensor(score.logprobs), manual_lp.cpu(), atol=1e-5)
    assert torch.allclose(vlm.logits(_image(1), PROMPT, TARGET), logits, atol=1e-5)


def test_changing_the_image_changes_logits(vlm: VisionLanguageModel) -> None:
    a = vlm.logits(_image(2), PROMPT, TARGET)
    b = vlm.logits(_image(3), PROMPT, TARGET)
    assert a.shape == b.shape and a.dtype == torch.float32
    assert (a - b).abs().max().item() > 1e-4


def test_text_only_encoding(vlm: VisionLanguageModel) -> None:
    inputs = vlm.encode(None, PROMPT, TARGET)
    assert "pixel_values" not in inputs.tensors
    assert inputs.image_positions.numel() == 0
    assert not bool((inputs.input_ids == vlm.image_token_id).any())
    n = inputs.target_ids.numel()
    assert inputs.input_ids[0, -n:].tolist() == inputs.target_ids.tolist()
    logits = vlm.logits(None, PROMPT, TARGET)
    assert logits.shape[0] == inputs.length and torch.isfinite(logits).all()
    score = vlm.score(None, PROMPT, TARGET)
    assert len(score.logprobs) == n


def test_forward_backpropagates_to_edit_sites(vlm: VisionLanguageModel) -> None:
    inputs = vlm.encode(_image(4), PROMPT, TARGET)
    groups = vlm.site_paths(1, include_projector=True)
    sites = [vlm.model.get_submodule(p) for paths in groups.values() for p in paths]
    for site in sites:
        site.weight.grad = None
    logits = vlm.forward(inputs)
    assert logits.requires_grad and logits.shape[:2] == inputs.input_ids.shape
    loss = nn.functional.cross_entropy(logits[0, inputs.target_positions].float(), inputs.target_ids)
    loss.backward()
    for site in sites:
        assert site.weight.grad is not None and site.weight.grad.abs().sum() > 0
        site.weight.grad = None


def test_answer_returns_text(vlm: VisionLanguageModel) -> None:
    with_image = vlm.answer(_image(5), PROMPT, max_new_tokens=4)
    text_only = vlm.answer(None, PROMPT, max_new_tokens=4)
    assert isinstance(with_image, str) and isinstance(text_only, str)
    assert with_image == with_image.strip()


def test_generation_continues_the_prompt(vlm: VisionLanguageModel) -> None:
    """``answer`` slices the prompt off ``generate``'s output: check that the output starts with
    the prompt and that the first new token is the teacher-forced argmax after the prompt."""
    for image in (_image(5), None):
        inputs = vlm.encode(image, PROMPT, None)
        output = vlm.generate(inputs, max_new_tokens=2)
        with torch.no_grad():
            last = vlm.forward(inputs)[0, -1]
        assert output.shape == (1, inputs.length + 2)
        assert torch.equal(output[:, : inputs.length], inputs.input_ids)
        assert output[0, inputs.length].item() == last.argmax().item()


def test_site_paths_are_linears(vlm: VisionLanguageModel) -> None:
    n_layers = len(vlm.decoder_layers())
    groups = vlm.site_paths(2, include_projector=True)
    assert list(groups) == [f"layer.{n_layers - 2}", f"layer.{n_layers - 1}", "projector"]
    for paths in groups.values():
        assert paths
        for path in paths:
            assert isinstance(vlm.model.get_submodule(path), nn.Linear)
    assert "projector" not in vlm.site_paths(1, include_projector=False)
    with pytest.raises(ValueError, match="n_last_layers"):
        vlm.site_paths(n_layers + 1, include_projector=False)


# -- bad input -------------------------------------------------------------------------------
def test_missing_image_path(vlm: VisionLanguageModel, tmp_path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(ValueError, match="nope.png"):
        vlm.encode(missing, PROMPT, TARGET)


def test_unreadable_image_file(vlm: VisionLanguageModel, tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="broken.png"):
        vlm.encode(str(broken), PROMPT, TARGET)


@pytest.mark.parametrize("target", ["", "   ", "\n\t"])
def test_empty_target(vlm: VisionLanguageModel, target: str) -> None:
    with pytest.raises(ValueError, match="target"):
        vlm.encode(_image(0), PROMPT, target)


def test_too_long_prompt(vlm: VisionLanguageModel) -> None:
    long_prompt = "what color " * vlm.text_context_length
    with pytest.raises(ValueError, match=rf"{vlm.text_context_length}") as info:
        vlm.encode(None, long_prompt, TARGET)
    assert "prompt (" in str(info.value)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_non_rgb_image_is_converted(vlm: VisionLanguageModel, mode: str) -> None:
    image = _image(6, mode=mode)
    inputs = vlm.encode(image, PROMPT, TARGET)
    reference = vlm.encode(image.convert("RGB"), PROMPT, TARGET)
    assert image.mode == mode  # the caller's image is left alone
    assert torch.equal(inputs.tensors["pixel_values"], reference.tensors["pixel_values"])


def test_image_path_equals_pil_image(vlm: VisionLanguageModel, tmp_path) -> None:
    image = _image(7)
    path = tmp_path / "img.png"
    image.save(path)
    from_path = vlm.encode(path, PROMPT, TARGET)
    from_pil = vlm.encode(image, PROMPT, TARGET)
    assert torch.equal(from_path.tensors["pixel_values"], from_pil.tensors["pixel_values"])
    assert torch.equal(from_path.input_ids, from_pil.input_ids)


def test_bfloat16_model() -> None:
    model, processor = build_tiny("LlavaForConditionalGeneration")
    vlm = load(model, processor, dtype=torch.bfloat16)
    inputs = vlm.encode(_image(0), PROMPT, TARGET)
    assert inputs.tensors["pixel_values"].dtype == torch.bfloat16
    logits = vlm.logits(_image(0), PROMPT, TARGET)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert vlm.forward(inputs).dtype == torch.bfloat16


# -- loading ---------------------------------------------------------------------------------
# Without torchvision, transformers 5.24 can neither save nor load a Qwen-VL processor (its video
# processor needs torchvision), so those checkpoints are loaded with the processor passed in.
PROCESSOR_NOT_SAVABLE = {"Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"}


def test_load_from_checkpoint_directory(vlm: VisionLanguageModel, tmp_path) -> None:
    vlm.model.save_pretrained(tmp_path)
    if vlm.spec.name in PROCESSOR_NOT_SAVABLE:
        loaded = load(tmp_path, vlm.processor, device=vlm.device)
    else:
        vlm.processor.save_pretrained(tmp_path)
        loaded = load(tmp_path, device=vlm.device)
    assert type(loaded.model) is type(vlm.model)
    assert type(loaded.processor) is type(vlm.processor)
    assert not loaded.model.training
    expected = vlm.logits(_image(8), PROMPT, TARGET)
    saved, restored = vlm.model.state_dict(), loaded.model.state_dict()
    assert set(restored) == set(saved)
    assert all(torch.equal(restored[k], saved[k]) for k in saved)
    # on a GPU the two copies of the same weights may run different kernels (TF32 convolutions,
    # fused attention): logits differed by up to 2.9e-3 on an H100 (PaliGemma; the others < 1e-3)
    tol = {"atol": 1e-5, "rtol": 1e-5} if vlm.device.type == "cpu" else {"atol": 1e-2, "rtol": 1e-2}
    got = loaded.logits(_image(8), PROMPT, TARGET)
    assert torch.allclose(got, expected, **tol), f"largest difference {float((got - expected).abs().max()):.2e}"
    assert torch.equal(loaded.encode(None, PROMPT, TARGET).input_ids, vlm.encode(None, PROMPT, TARGET).input_ids)


def test_load_built_model(vlm: VisionLanguageModel) -> None:
    wrapped = load(vlm.model, vlm.processor)
    assert wrapped.spec == vlm.spec
    with pytest.raises(ValueError, match="processor"):
        load(vlm.model)


def test_load_builtin() -> None:
    vlm = load("builtin")
    assert isinstance(vlm.answer(_image(9), PROMPT, max_new_tokens=4), str)
    assert vlm.site_paths(1, include_projector=True)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_build_tiny_is_seeded(arch: str) -> None:
    (a, pa), (b, pb), (c, _) = build_tiny(arch, seed=0), build_tiny(arch, seed=0), build_tiny(arch, seed=1)
    assert pa.tokenizer.get_vocab() == pb.tokenizer.get_vocab()
    state_a, state_b, state_c = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert any(not torch.equal(state_a[k], state_c[k]) for k in state_a)
    assert not a.training and all(p.dtype == torch.float32 for p in a.parameters())


def test_reused_image_features_give_the_same_logits(vlm: VisionLanguageModel) -> None:
    vision = vlm.model.get_submodule(vlm.spec.vision_module)
    first = vlm.encode(_image(0), PROMPT, TARGET)
    second = vlm.encode(_image(1), PROMPT, TARGET)
    with torch.no_grad():
        expected = [vlm.forward(first), vlm.forward(second)]
    flags = [(p, p.requires_grad) for p in vision.parameters()]
    with pytest.raises(ValueError, match="require gradients"), vlm.reusing_image_features():
        pass
    vision.requires_grad_(False)
    try:
        with torch.no_grad(), vlm.reusing_image_features() as cache:
            got = [vlm.forward(first), vlm.forward(first), vlm.forward(second), vlm.forward(first)]
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    assert len(cache) == 2  # one computation per image, though the model ran four times
    for logits, want in zip(got, [expected[0], expected[0], expected[1], expected[0]]):
        assert torch.equal(logits, want)
    assert "forward" not in vision.__dict__
