"""Build the built-in model: a small LLaVA (CLIP vision tower + Llama decoder) and its processor.

Everything here produces stock transformers objects: the saved directory loads with
``LlavaForConditionalGeneration.from_pretrained`` and ``AutoProcessor.from_pretrained`` alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerBase,
)

from editscope.world.render import IMAGE_SIZE
from editscope.world.tokenizer import IMAGE

# Renders the llava-hf LLaVA-1.5 prompt: "USER: <image>\n{q} ASSISTANT:" (no image entry:
# "USER: {q} ASSISTANT:"); an assistant turn is rendered as " {answer}</s>".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% endif %} "
    "{% else %}ASSISTANT:"
    "{% if message['content'] is string %} {{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}{% if item['type'] == 'text' %} {{ item['text'] }}{% endif %}{% endfor %}"
    "{% endif %}</s>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of the built-in model. ``image_size / patch_size`` squared image tokens per image."""

    image_size: int = IMAGE_SIZE
    patch_size: int = 16
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 768
    max_positions: int = 256

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, int]) -> "ModelSpec":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ModelSpec keys: {sorted(unknown)}")
        return cls(**data)


def build_config(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase) -> LlavaConfig:
    """The :class:`LlavaConfig` of ``spec`` for ``tokenizer``'s vocabulary."""
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=4 * spec.vision_hidden,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_heads,
        max_position_embeddings=spec.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        image_seq_length=spec.image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )


def build_model(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, seed: int) -> LlavaForConditionalGeneration:
    """A freshly initialised model (deterministic given ``seed``)."""
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config(spec, tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def build_processor(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase) -> LlavaProcessor:
    """The processor: CLIP-style image preprocessing at ``spec.image_size`` + tokenizer + chat
    template, expanding ``<image>`` to ``spec.image_tokens`` tokens.

    The image processor is CLIP's PIL backend, named directly: the plain ``CLIPImageProcessor``
    name needs torchvision, and without it transformers warns on import and falls back to this
    same class. Its saved ``image_processor_type`` is still ``"CLIPImageProcessor"``, so the
    directory loads with ``AutoProcessor`` as before."""
    image_processor = CLIPImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": spec.image_size},
        do_center_crop=True,
        crop_size={"height": spec.image_size, "width": spec.image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE,
        num_additional_image_tokens=1,
    )


def pixel_tensor(images: list, spec_mean: tuple[float, ...] = IMAGE_MEAN,
                 spec_std: tuple[float, ...] = IMAGE_STD) -> torch.Tensor:
    """Normalise RGB PIL images already at the model's size into ``(B, 3, H, W)`` float32, the
    same values the image processor produces for such images (fast path used in training)."""
    import numpy as np

    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]) / 255.0
    mean = np.asarray(spec_mean, dtype=np.float32)
    std = np.asarray(spec_std, dtype=np.float32)
    array = (array - mean) / std
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
