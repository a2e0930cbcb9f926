"""The architecture registry and loading errors, without any model files or weights."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import transformers
from torch import nn

from editscope.models import (
    ArchitectureSpec,
    UnsupportedModelError,
    VisionLanguageModel,
    load,
    register_architecture,
    spec_for,
    supported_architectures,
)
from editscope.models.registry import EXTRA_INPUT_BUILDERS, unregister_architecture

SEVEN = (
    "LlavaForConditionalGeneration",
    "LlavaNextForConditionalGeneration",
    "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "Blip2ForConditionalGeneration",
    "Idefics3ForConditionalGeneration",
    "PaliGemmaForConditionalGeneration",
)


def test_all_seven_are_registered() -> None:
    assert set(SEVEN) <= set(supported_architectures())
    for name in SEVEN:
        spec = spec_for(name)
        assert spec.name == name
        assert spec_for(getattr(transformers, name)) is spec


def test_unknown_class_lists_supported() -> None:
    with pytest.raises(UnsupportedModelError) as info:
        spec_for(nn.Linear(2, 2))
    message = str(info.value)
    assert "Linear" in message
    for name in SEVEN:
        assert name in message
    assert isinstance(info.value, ValueError)


def test_subclass_uses_parent_spec() -> None:
    class MyLlava(transformers.LlavaForConditionalGeneration):
        pass

    assert spec_for(MyLlava) is spec_for("LlavaForConditionalGeneration")


def _toy_spec(name: str) -> ArchitectureSpec:
    return ArchitectureSpec(name=name, decoder_layers="layers", mlp_sites=("fc1", "fc2"), projector_sites=("proj",))


def test_register_architecture_adds_and_guards() -> None:
    class ToyVLM(nn.Module):
        pass

    with pytest.raises(UnsupportedModelError):
        spec_for(ToyVLM)
    spec = _toy_spec("ToyVLM")
    register_architecture(ToyVLM, spec)
    try:
        assert spec_for(ToyVLM()) is spec
        assert "ToyVLM" in supported_architectures()
        with pytest.raises(ValueError, match="already registered"):
            register_architecture("ToyVLM", spec)
        replacement = dataclasses.replace(spec, mlp_sites=("fc2",))
        register_architecture("ToyVLM", replacement, overwrite=True)
        assert spec_for("ToyVLM").mlp_sites == ("fc2",)
        with pytest.raises(ValueError, match="registered for"):
            register_architecture("OtherName", spec)
    finally:
        unregister_architecture(ToyVLM)
    with pytest.raises(UnsupportedModelError):
        spec_for(ToyVLM)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="extra_inputs"):
        dataclasses.replace(_toy_spec("X"), extra_inputs=("no_such_input",))
    with pytest.raises(ValueError, match="mlp_sites"):
        dataclasses.replace(_toy_spec("X"), mlp_sites=())
    with pytest.raises(ValueError, match="prompt"):
        dataclasses.replace(_toy_spec("X"), prompt_format="no placeholder")


def test_spec_helpers() -> None:
    spec = spec_for("LlavaForConditionalGeneration")
    assert spec.mlp_site_paths(3) == [
        "model.language_model.layers.3.mlp.up_proj",
        "model.language_model.layers.3.mlp.down_proj",
    ]
    assert spec.format_prompt("Why?", "<image>") == "USER: <image>\nWhy? ASSISTANT:"
    assert spec.format_prompt("Why?", None) == "USER: Why? ASSISTANT:"
    qwen = spec_for("Qwen2VLForConditionalGeneration")
    assert "<|vision_start|><|image_pad|><|vision_end|>Why?" in qwen.format_prompt("Why?", "<|image_pad|>")


def test_blip2_without_image_token_index_is_a_clear_error() -> None:
    config = transformers.Blip2Config()
    assert config.image_token_index is None
    with pytest.raises(ValueError, match="image_token_index"):
        spec_for("Blip2ForConditionalGeneration").image_token_id(config)


def test_extra_input_builders() -> None:
    ids = torch.tensor([[5, 9, 9, 9, 3, 4, 7, 8]])
    image_mask = ids == 9
    mm = EXTRA_INPUT_BUILDERS["mm_token_type_ids"](ids, image_mask, 6)
    assert mm.tolist() == [[0, 1, 1, 1, 0, 0, 0, 0]]
    tt = EXTRA_INPUT_BUILDERS["token_type_ids"](ids, image_mask, 6)
    assert tt.tolist() == [[0, 0, 0, 0, 0, 0, 1, 1]]


def _meta_model(name: str, config: transformers.PretrainedConfig) -> nn.Module:
    with torch.device("meta"):
        return getattr(transformers, name)(config)


def _small_config(name: str) -> transformers.PretrainedConfig:
    """The class's default config, shrunk to two decoder layers (structure unchanged)."""
    config = getattr(transformers, name).config_class()
    text = config.get_text_config()
    text.num_hidden_layers = 2
    if getattr(text, "pad_token_id", None) is not None and text.pad_token_id >= text.vocab_size:
        text.pad_token_id = None  # some transformers 5.x defaults (Idefics3 in 5.17) put it past the vocabulary
    if name == "Blip2ForConditionalGeneration":
        config.image_token_index = 50265
    return config


@pytest.mark.parametrize("name", SEVEN)
def test_spec_paths_resolve_on_meta_models(name: str) -> None:
    """Every path of every spec resolves to nn.Linear on the default-config model (meta device:
    no memory, no weights)."""
    model = _meta_model(name, _small_config(name))

    class _NoProcessor:
        tokenizer = None

    vlm = VisionLanguageModel(model, _NoProcessor())
    groups = vlm.site_paths(2, include_projector=True)
    assert list(groups) == ["layer.0", "layer.1", "projector"]
    for paths in groups.values():
        for path in paths:
            assert isinstance(model.get_submodule(path), nn.Linear)


def test_site_paths_name_a_wrong_path() -> None:
    name = "LlavaForConditionalGeneration"
    model = _meta_model(name, _small_config(name))
    spec = dataclasses.replace(spec_for(name), mlp_sites=("mlp.up_proj", "mlp.act_fn"))
    with pytest.raises(ValueError, match=r"mlp\.act_fn.*not an nn\.Linear"):
        VisionLanguageModel(model, None, spec).site_paths(1, include_projector=False)
    spec = dataclasses.replace(spec_for(name), projector_sites=("model.no_such_projector",))
    with pytest.raises(ValueError, match="no_such_projector"):
        VisionLanguageModel(model, None, spec).site_paths(1, include_projector=True)


# -- loading errors (no model files) -----------------------------------------------------------
def test_load_missing_directory(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        load(tmp_path / "does_not_exist")


def test_load_directory_without_config(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        load(tmp_path)


def test_load_unsupported_class_lists_supported(tmp_path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]})
    )
    with pytest.raises(UnsupportedModelError) as info:
        load(tmp_path)
    assert "BertForMaskedLM" in str(info.value)
    assert "LlavaForConditionalGeneration" in str(info.value)


def test_load_rejects_non_models() -> None:
    with pytest.raises(UnsupportedModelError):
        load(nn.Linear(2, 2), processor=object())
    with pytest.raises(TypeError):
        load(42)  # type: ignore[arg-type]
