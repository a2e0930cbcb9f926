"""Tiny random-initialised vision-language models with real processors, built offline.

``build_tiny(arch)`` returns ``(model, processor)`` for one of the supported Hugging Face classes:
the model is built from a small config (float32, eval mode, seeded), the processor is the
architecture's own processor class around a byte-level BPE tokenizer trained in memory on a
fixed corpus and the architecture's PIL image processor with small image sizes. Nothing is
downloaded.

The model is placed on ``TEST_DEVICE``: the CPU, or the device the environment variable
``EDITSCOPE_TEST_DEVICE`` names (``EDITSCOPE_TEST_DEVICE=cuda pytest tests/integration`` runs the
integration tests on a GPU; ``scripts/device_check.sh`` does this).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator

import torch
from transformers import PreTrainedTokenizerFast

from editscope.benchmarks.tiny import (
    TinyLlavaSize,
    bpe_tokenizer,
    build_tiny_llava,
    clip_vision_config,
    llama_text_config,
    llama_tokenizer,
)

TEST_DEVICE = torch.device(os.environ.get("EDITSCOPE_TEST_DEVICE", "cpu"))
VOCAB_SIZE = 400
IMAGE_SIZE = 32
CORPUS = (
    "what color is the object in the image ? what is this ? the answer is red green blue yellow",
    "black white orange purple a cat dog car tree house sky bird fish apple banana",
    "USER: ASSISTANT: Question: Answer: User: Assistant: describe the picture please .",
    "who made it ? where is it ? how many are there ? one two three four five six",
)


LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% elif item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% if message['role'] == 'user' %} {% else %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def make_tokenizer(
    special_tokens: list[str],
    *,
    bos: str | None,
    eos: str,
    pad: str,
    add_bos: bool,
    extra_special_tokens: dict[str, str] | None = None,
    chat_template: str | None = None,
) -> PreTrainedTokenizerFast:
    """The package's byte-level BPE tokenizer, trained on ``CORPUS`` (deterministic)."""
    return bpe_tokenizer(
        CORPUS,
        VOCAB_SIZE,
        special_tokens,
        bos=bos,
        eos=eos,
        pad=pad,
        add_bos=add_bos,
        extra_special_tokens=extra_special_tokens,
        chat_template=chat_template,
    )


# -- LLaVA -----------------------------------------------------------------------------------
# The package's tiny-LLaVA builder (also the ``cost`` model), at test sizes. Its tokenizer and
# Llama / CLIP configs (``llama_tokenizer``, ``llama_text_config``, ``clip_vision_config``) also
# build LLaVA-NeXT and Idefics3's decoder below.
LLAVA_SIZE = TinyLlavaSize(
    hidden=64, intermediate=128, layers=3, heads=4, kv_heads=2, max_positions=256,
    vision_hidden=32, vision_intermediate=64, vision_layers=2, vision_heads=2, vision_projection=32,
    image_size=IMAGE_SIZE, patch=8, vocab=VOCAB_SIZE,
)  # fmt: skip


def _build_llava() -> tuple[Any, Any]:
    """LLaVA-1.5 layout: CLIP tower (32px, patch 8 -> 16 image tokens, "default" strategy),
    two-layer projector, Llama decoder; the processor has a LLaVA-1.5 chat template. Built by
    :func:`editscope.benchmarks.tiny.build_tiny_llava` from the RNG ``build_tiny`` seeded."""
    return build_tiny_llava(None, LLAVA_SIZE, corpus=CORPUS, chat_template=LLAVA_CHAT_TEMPLATE, unk=None)


# -- LLaVA-NeXT ------------------------------------------------------------------------------
def _build_llava_next() -> tuple[Any, Any]:
    """LLaVA-NeXT (anyres): CLIP tower 32px/patch 8, grid pinpoints of 32 and 64 px; no chat
    template, so the spec's LLaVA fallback prompt is used."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    pinpoints = [[IMAGE_SIZE, IMAGE_SIZE], [IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE]]
    tokenizer = llama_tokenizer(CORPUS, VOCAB_SIZE, unk=None)  # LLaVA's
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = LlavaNextConfig(
        vision_config=clip_vision_config(LLAVA_SIZE),
        text_config=llama_text_config(tokenizer, LLAVA_SIZE),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
    )
    return LlavaNextForConditionalGeneration(config), processor


# -- Qwen2-VL / Qwen2.5-VL ------------------------------------------------------------------------
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip


def _qwen_parts(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """Text config (head_dim 16, so mrope_section sums to 8) and the special-token ids."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    text_config = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=256,
        rope_parameters=dict(rope_type="default", rope_theta=1e4, mrope_section=[2, 3, 3]),
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    return dict(
        text_config=text_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _qwen_processor(processor_class: type) -> Any:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = make_tokenizer(
        QWEN_SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>", add_bos=False,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )  # fmt: skip
    # 8px patches merged 2x2: a 32x32 image is a 4x4 patch grid, 4 image tokens.
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=8, temporal_patch_size=2, merge_size=2, min_pixels=IMAGE_SIZE**2, max_pixels=IMAGE_SIZE**2
    )
    with _video_processor_optional():
        return processor_class(
            image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=QWEN_CHAT_TEMPLATE
        )


@contextlib.contextmanager
def _video_processor_optional() -> Iterator[None]:
    """Let a Qwen processor be built with ``video_processor=None``.

    transformers 5.24 checks every processor attribute's class, and without torchvision the
    video-processor base class cannot be resolved, so even ``None`` fails. The tiny models never
    process videos; this skips the check for ``None`` arguments only, during construction only.
    """
    from transformers.processing_utils import ProcessorMixin

    original = ProcessorMixin.check_argument_for_proper_class

    def check(self: Any, argument_name: str, argument: Any) -> Any:
        return None if argument is None else original(self, argument_name, argument)

    ProcessorMixin.check_argument_for_proper_class = check  # type: ignore[method-assign]
    try:
        yield
    finally:
        ProcessorMixin.check_argument_for_proper_class = original  # type: ignore[method-assign]


def _build_qwen2_vl() -> tuple[Any, Any]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    processor = _qwen_processor(Qwen2VLProcessor)
    vision_config = dict(
        depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=8,
        spatial_merge_size=2, temporal_patch_size=2,
    )  # fmt: skip
    config = Qwen2VLConfig(vision_config=vision_config, **_qwen_parts(processor.tokenizer))
    return Qwen2VLForConditionalGeneration(config), processor


def _build_qwen2_5_vl() -> tuple[Any, Any]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    processor = _qwen_processor(Qwen2_5_VLProcessor)
    vision_config = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=8,
        spatial_merge_size=2, temporal_patch_size=2, window_size=32, fullatt_block_indexes=[1],
    )  # fmt: skip
    config = Qwen2_5_VLConfig(vision_config=vision_config, **_qwen_parts(processor.tokenizer))
    return Qwen2_5_VLForConditionalGeneration(config), processor


# -- BLIP-2 (OPT) --------------------------------------------------------------------------------
BLIP2_QUERY_TOKENS = 4


def _build_blip2() -> tuple[Any, Any]:
    """BLIP-2 with an OPT decoder: 4 query tokens (the image positions) before <s>; no chat
    template. ``image_token_index`` is set and ``query_tokens`` re-initialised (std 0.02): from a
    config they are zeros, which makes the Q-Former's LayerNorm gradients explode."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        OPTConfig,
    )
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    # No image token in the tokenizer: Blip2Processor adds "<image>" itself.
    tokenizer = make_tokenizer(["<unk>", "<s>", "</s>", "<pad>"], bos="<s>", eos="</s>", pad="<pad>", add_bos=True)
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = Blip2Processor(image_processor, tokenizer, num_query_tokens=BLIP2_QUERY_TOKENS)
    config = Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=8, initializer_range=0.02,  # default 1e-10: a blind tower
        ),
        qformer_config=Blip2QFormerConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            encoder_hidden_size=32, vocab_size=len(tokenizer), max_position_embeddings=64,
        ),
        text_config=OPTConfig(
            hidden_size=64, ffn_dim=128, num_hidden_layers=3, num_attention_heads=4, word_embed_proj_dim=64,
            vocab_size=len(tokenizer), max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        num_query_tokens=BLIP2_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    model = Blip2ForConditionalGeneration(config)
    with torch.no_grad():
        model.query_tokens.normal_(mean=0.0, std=0.02)
    return model, processor


# -- Idefics3 (SmolVLM) --------------------------------------------------------------------------
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IDEFICS3_IMAGE_TOKENS = (IMAGE_SIZE // 8) ** 2 // 2**2  # patches / scale_factor^2


def _build_idefics3() -> tuple[Any, Any]:
    """Idefics3 / SmolVLM: SigLIP-like tower 32px/patch 8, pixel shuffle x2 -> 4 image tokens
    between <fake_token_around_image><global-img> and <fake_token_around_image>; no splitting."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tokenizer = make_tokenizer(
        ["<unk>", "<|im_start|>", "<end_of_utterance>", "<pad>", "<image>", "<fake_token_around_image>",
         "<global-img>"],
        bos="<|im_start|>", eos="<end_of_utterance>", pad="<pad>", add_bos=False,
    )  # fmt: skip
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE}
    )
    processor = Idefics3Processor(
        image_processor, tokenizer, image_seq_len=IDEFICS3_IMAGE_TOKENS, chat_template=IDEFICS3_CHAT_TEMPLATE
    )
    config = Idefics3Config(
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=8,
        ),
        text_config=llama_text_config(tokenizer, LLAVA_SIZE),  # after the processor added its tokens
        scale_factor=2,
        image_token_id=processor.image_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return Idefics3ForConditionalGeneration(config), processor


# -- PaliGemma -----------------------------------------------------------------------------------
PALIGEMMA_IMAGE_TOKENS = (IMAGE_SIZE // 8) ** 2


def _build_paligemma() -> tuple[Any, Any]:
    """PaliGemma: SigLIP tower 32px/patch 8 (16 image tokens before <bos>), Gemma decoder; the
    processor adds its <loc>/<seg> tokens to the tokenizer; no chat template."""
    from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers import SiglipVisionConfig
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tokenizer = make_tokenizer(
        ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"], bos="<bos>", eos="<eos>", pad="<pad>", add_bos=True,
        extra_special_tokens={"image_token": "<image>"},
    )  # fmt: skip
    image_processor = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    image_processor.image_seq_length = PALIGEMMA_IMAGE_TOKENS
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=8, projection_dim=64,
        ),
        text_config=GemmaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=1, head_dim=16, vocab_size=len(tokenizer), max_position_embeddings=256,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        projection_dim=64,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return PaliGemmaForConditionalGeneration(config), processor


_BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "LlavaForConditionalGeneration": _build_llava,
    "LlavaNextForConditionalGeneration": _build_llava_next,
    "Qwen2VLForConditionalGeneration": _build_qwen2_vl,
    "Qwen2_5_VLForConditionalGeneration": _build_qwen2_5_vl,
    "Blip2ForConditionalGeneration": _build_blip2,
    "Idefics3ForConditionalGeneration": _build_idefics3,
    "PaliGemmaForConditionalGeneration": _build_paligemma,
}
ARCHITECTURES: tuple[str, ...] = tuple(_BUILDERS)


def build_tiny(arch: str, seed: int = 0) -> tuple[Any, Any]:
    """``(model, processor)`` for the Hugging Face class name ``arch``: float32, eval mode, the
    weights drawn with ``torch.manual_seed(seed)``."""
    if arch not in _BUILDERS:
        raise ValueError(f"no tiny model for {arch!r}; available: {', '.join(sorted(_BUILDERS))}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = _BUILDERS[arch]()
    model = model.to(device=TEST_DEVICE, dtype=torch.float32).eval()
    return model, processor


def noise_image(seed: int = 0, size: int = 32, mode: str = "RGB") -> Any:
    """A seeded random-noise PIL image (``size`` x ``size``), converted to ``mode``."""
    import numpy as np
    from PIL import Image

    pixels = np.random.RandomState(seed).randint(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)
