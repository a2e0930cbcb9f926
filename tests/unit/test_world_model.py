"""The model builder, processor conventions and training pieces, on tiny configs (no model files)."""

from __future__ import annotations

import math

import pytest
import torch

from editscope.world import build_world, fixed_render, user_prompt
from editscope.world.data import Encoder, collate
from editscope.world.modeling import ModelSpec, build_config, build_model, build_processor
from editscope.world.tokenizer import build_tokenizer
from editscope.world.train import Sampler, TrainConfig, learning_rate

TINY = ModelSpec(vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=32, text_layers=1,
                 text_heads=2, text_intermediate=64)


@pytest.fixture(scope="module")
def world():
    return build_world()


@pytest.fixture(scope="module")
def tokenizer(world):
    return build_tokenizer(world)


def test_chat_template_renders_the_llava_prompt(tokenizer):
    processor = build_processor(TINY, tokenizer)
    image_msg = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape is this?"}]}]
    text_msg = [{"role": "user", "content": [{"type": "text", "text": "Who made Zorb?"}]}]
    assert processor.apply_chat_template(image_msg, add_generation_prompt=True) == user_prompt(
        "What shape is this?", True)
    assert processor.apply_chat_template(text_msg, add_generation_prompt=True) == user_prompt("Who made Zorb?", False)
    answered = text_msg + [{"role": "assistant", "content": [{"type": "text", "text": "Kel Works"}]}]
    assert processor.apply_chat_template(answered) == "USER: Who made Zorb? ASSISTANT: Kel Works</s>"


def test_processor_expands_image_tokens_like_the_training_encoder(world, tokenizer):
    processor = build_processor(TINY, tokenizer)
    config = build_config(TINY, tokenizer)
    image = fixed_render(world.subject(0), "heldout", 0, world.config.seed)
    prompt = user_prompt("What shape is this?", True)
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(config.image_token_index) == TINY.image_tokens == config.image_seq_length
    encoder = Encoder(tokenizer, TINY.image_tokens)
    assert ids == encoder.prompt_ids("What shape is this?", True)
    from editscope.world.modeling import pixel_tensor

    assert torch.allclose(inputs["pixel_values"], pixel_tensor([image]), atol=1e-6)


def test_tiny_model_trains_on_a_mixed_batch(world, tokenizer):
    model = build_model(TINY, tokenizer, seed=0)
    assert model.config.vision_feature_select_strategy == "default"
    encoder = Encoder(tokenizer, TINY.image_tokens)
    sampler = Sampler(world, encoder, TrainConfig(visual=2, attribute=2, text=2, model=TINY))
    step = sampler.step()
    assert len(step.image_subjects) == len(step.images) == 4 and len(step.texts) == 2
    batch = collate(step.images + step.texts, tokenizer.pad_token_id)
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0


def test_sampler_is_deterministic_and_ranks_differ(world, tokenizer):
    encoder = Encoder(tokenizer, TINY.image_tokens)
    config = TrainConfig(visual=3, attribute=3, text=3, model=TINY)
    a, b, c = (Sampler(world, encoder, config, rank) for rank in (0, 0, 1))
    step_a, step_b, step_c = a.step(), b.step(), c.step()
    assert [e.input_ids for e in step_a.images + step_a.texts] == [e.input_ids for e in step_b.images + step_b.texts]
    assert step_a.image_subjects == step_b.image_subjects
    assert [e.input_ids for e in step_a.images + step_a.texts] != [e.input_ids for e in step_c.images + step_c.texts]


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(steps=1000, warmup=100, lr=1e-3, min_lr_ratio=0.1)
    assert learning_rate(config, 0) == pytest.approx(1e-5)
    assert learning_rate(config, 99) == pytest.approx(1e-3)
    assert learning_rate(config, 550) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert learning_rate(config, 1000) == pytest.approx(1e-4)
    rates = [learning_rate(config, s) for s in range(100, 1000, 50)]
    assert rates == sorted(rates, reverse=True)


def test_config_validation():
    with pytest.raises(ValueError):
        TrainConfig(steps=0)
    with pytest.raises(ValueError):
        TrainConfig(fresh=1.5)
    with pytest.raises(ValueError):
        ModelSpec(image_size=60, patch_size=16)


def test_projector_tap_feature_scale_and_auxiliary_heads(world, tokenizer):
    from editscope.world.train import AuxiliaryHeads, ProjectorTap, feature_scale

    model = build_model(TINY, tokenizer, seed=0)
    encoder = Encoder(tokenizer, TINY.image_tokens)
    step = Sampler(world, encoder, TrainConfig(visual=2, attribute=1, text=1, model=TINY)).step()
    batch = collate(step.images, tokenizer.pad_token_id)
    tap = ProjectorTap(model)
    model.eval()
    model(**batch)
    assert tap.pop() == []  # only training passes are kept
    model.train()
    model(**batch)
    captured = tap.pop()
    assert len(captured) == 1
    features, projected = captured[0]
    assert features.shape == (3, TINY.image_tokens, TINY.vision_hidden)
    expected = features.pow(2).mean() + projected.pow(2).mean()
    assert torch.allclose(feature_scale(captured), expected)
    heads = AuxiliaryHeads(world, TINY.vision_hidden)
    loss = heads.loss(features, step.image_subjects)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    tap.remove()
    model(**batch)
    assert tap.pop() == []
