"""Tiny random-initialised vision-language models with real processors, built offline.

``build_tiny(arch)`` returns ``(model, processor)`` for one of the supported Hugging Face classes:
the model is built from a small config (float32, eval mode, seeded), the processor is the
architecture's own processor class around a byte-level BPE tokenizer trained in memory on a
fixed corpus and the architecture's PIL image processor with small image sizes. Nothing is
downloaded.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

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
    """A byte-level BPE tokenizer trained on ``CORPUS`` (deterministic), wrapped for transformers.

    ``special_tokens`` get the first ids, in order. With ``add_bos`` the tokenizer prepends
    ``bos`` when asked for special tokens.
    """
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    if add_bos:
        assert bos is not None
        bos_id = backend.token_to_id(bos)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    kwargs: dict[str, Any] = dict(eos_token=eos, pad_token=pad)
    if bos is not None:
        kwargs["bos_token"] = bos
    if extra_special_tokens:
        kwargs["extra_special_tokens"] = extra_special_tokens
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def _llama_text_config(tokenizer: PreTrainedTokenizerFast, **overrides: Any):
    from transformers import LlamaConfig

    values = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def _clip_vision_config(**overrides: Any):
    from transformers import CLIPVisionConfig

    values = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
        projection_dim=32,
    )
    values.update(overrides)
    return CLIPVisionConfig(**values)


def _llama_tokenizer(chat_template: str | None = None) -> PreTrainedTokenizerFast:
    return make_tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>", "<image>"],
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        add_bos=True,
        extra_special_tokens={"image_token": "<image>"},
        chat_template=chat_template,
    )


# -- LLaVA -----------------------------------------------------------------------------------
def _build_llava() -> tuple[Any, Any]:
    """LLaVA-1.5 layout: CLIP tower (32px, patch 8 -> 16 image tokens, "default" strategy),
    two-layer projector, Llama decoder; the processor has a LLaVA-1.5 chat template."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = _llama_tokenizer()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=_clip_vision_config(),
        text_config=_llama_text_config(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    return LlavaForConditionalGeneration(config), processor


_BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "LlavaForConditionalGeneration": _build_llava,
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
    model = model.to(torch.float32).eval()
    return model, processor
