"""A small random LLaVA built from a config, with a real processor: the ``cost`` model, and
(smaller, through the same builder) the tests' tiny LLaVA.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in memory on a fixed word
list, the image processor is CLIP's with a small image size. Seeded, so two builds are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tokenizers import processors

from editscope.world.tokenizer import train_byte_level_bpe

WORDS = (
    "what which who where when how is are the a an of in on this that object image picture color "
    "shape made from language spoken city year maker red green blue yellow black white orange "
    "purple circle square triangle star striped dotted plain USER ASSISTANT Question Short answer"
).split()

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% endif %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'user' %} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def bpe_tokenizer(
    corpus: Sequence[str],
    vocab_size: int,
    special_tokens: Sequence[str],
    *,
    bos: str | None,
    eos: str,
    pad: str,
    unk: str | None = None,
    add_bos: bool = True,
    extra_special_tokens: dict[str, str] | None = None,
    chat_template: str | None = None,
):
    """A byte-level BPE tokenizer trained in memory on ``corpus`` (deterministic), as a
    ``PreTrainedTokenizerFast``. ``special_tokens`` get the first ids, in order; with ``add_bos``
    the tokenizer prepends ``bos`` when asked for special tokens."""
    from transformers import PreTrainedTokenizerFast

    backend = train_byte_level_bpe(corpus, vocab_size, special_tokens)
    if add_bos:
        if bos is None:
            raise ValueError("add_bos needs a bos token")
        bos_id = backend.token_to_id(bos)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    kwargs: dict[str, Any] = dict(eos_token=eos, pad_token=pad)
    if bos is not None:
        kwargs["bos_token"] = bos
    if unk is not None:
        kwargs["unk_token"] = unk
    if extra_special_tokens:
        kwargs["extra_special_tokens"] = extra_special_tokens
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


@dataclass(frozen=True)
class TinyLlavaSize:
    """Sizes of the tiny LLaVA. The defaults are the ``cost`` model; the tests build a smaller
    one from the same builder (``tests/tiny_models.py``)."""

    hidden: int = 128
    intermediate: int = 512
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    max_positions: int = 512
    vision_hidden: int = 64
    vision_intermediate: int | None = None  # None: 4 * vision_hidden
    vision_layers: int = 4
    vision_heads: int = 4
    vision_projection: int | None = None  # CLIPVisionConfig.projection_dim; None: its default
    image_size: int = 32
    patch: int = 8
    vocab: int = 512


LLAMA_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")


def llama_tokenizer(
    corpus: Sequence[str], vocab_size: int, *, unk: str | None = "<unk>", chat_template: str | None = None
):
    """The tiny Llama-style tokenizer (LLaVA's and LLaVA-NeXT's): :data:`LLAMA_SPECIAL_TOKENS`
    first, ``<s>`` prepended, ``<image>`` as the image token; ``unk`` names the unknown token
    (``None``: none set), ``chat_template`` is set on the tokenizer when given."""
    return bpe_tokenizer(
        corpus,
        vocab_size,
        LLAMA_SPECIAL_TOKENS,
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk=unk,
        extra_special_tokens={"image_token": "<image>"},
        chat_template=chat_template,
    )


def clip_vision_config(size: TinyLlavaSize = TinyLlavaSize()):
    """The CLIP vision tower's config at ``size``."""
    from transformers import CLIPVisionConfig

    vision: dict[str, Any] = dict(
        hidden_size=size.vision_hidden,
        intermediate_size=size.vision_intermediate or 4 * size.vision_hidden,
        num_hidden_layers=size.vision_layers,
        num_attention_heads=size.vision_heads,
        image_size=size.image_size,
        patch_size=size.patch,
    )
    if size.vision_projection is not None:
        vision["projection_dim"] = size.vision_projection
    return CLIPVisionConfig(**vision)


def llama_text_config(tokenizer: Any, size: TinyLlavaSize = TinyLlavaSize()):
    """The Llama decoder's config at ``size``, its vocabulary and bos/eos/pad ids from
    ``tokenizer``."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=size.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_llava(
    seed: int | None = 0,
    size: TinyLlavaSize = TinyLlavaSize(),
    *,
    corpus: Sequence[str] | None = None,
    chat_template: str = CHAT_TEMPLATE,
    unk: str | None = "<unk>",
):
    """Return ``(model, processor)``: a ``LlavaForConditionalGeneration`` (float32, eval) and
    its ``LlavaProcessor``.

    The tokenizer (:func:`llama_tokenizer`) is trained on ``corpus`` (default: :data:`WORDS`,
    four times) with ``size.vocab`` entries; ``unk`` names its unknown token (``None``: none
    set). The weights are drawn after ``torch.manual_seed(seed)``, or from the current torch RNG
    when ``seed`` is ``None`` (the caller has seeded it).
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = llama_tokenizer([" ".join(WORDS)] * 4 if corpus is None else corpus, size.vocab, unk=unk)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size.image_size},
        crop_size={"height": size.image_size, "width": size.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=size.patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )
    config = LlavaConfig(
        vision_config=clip_vision_config(size),
        text_config=llama_text_config(tokenizer, size),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    if seed is not None:
        torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    return model, processor
