"""A small byte-level BPE tokenizer trained on the world's text.

Byte-level: every string (new names and answers an edit brings included) encodes, through the
256 byte symbols if need be. Special tokens: ``<s>`` (bos, prepended by the post-processor),
``</s>`` (eos), ``<pad>`` and ``<image>``.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from editscope.world.templates import ATTRIBUTE_TEMPLATES, all_questions, answer_text, user_prompt
from editscope.world.world import ATTRIBUTE_VALUES, World

BOS, EOS, PAD, IMAGE = "<s>", "</s>", "<pad>", "<image>"
SPECIAL_TOKENS: tuple[str, ...] = (BOS, EOS, PAD, IMAGE)
DEFAULT_VOCAB_SIZE = 1200

_GENERAL_TEXT = (
    "The quick brown fox jumps over the lazy dog. Question: Short answer: a photo of "
    "What is the name of this? Where is it? How many are there? Yes No 0 1 2 3 4 5 6 7 8 9 "
    "the a an of in on at to from by with and or is was are were it this that these those "
)


def corpus(world: World) -> list[str]:
    """The text the tokenizer is trained on: every prompt with its answer, plus a little general
    English so that common words outside the world are not split into single bytes."""
    lines = [_GENERAL_TEXT] * 3
    for subject in world.subjects:
        for split in ("train", "heldout"):
            for q in all_questions(subject, split):
                lines.append(user_prompt(q.text, q.image) + answer_text(q.answer))
    for values in world.value_pools.values():
        lines.extend(answer_text(v) for v in values)
    for values in ATTRIBUTE_VALUES.values():
        lines.extend(answer_text(v) for v in values)
    for templates in ATTRIBUTE_TEMPLATES.values():
        lines.extend(templates["train"])
    return lines


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str]) -> Tokenizer:
    """A byte-level BPE trained on ``texts`` (deterministic), ``special_tokens`` at the first ids,
    without a post-processor."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """Train a byte-level BPE on ``texts`` with the special tokens at ids 0-3."""
    tokenizer = train_byte_level_bpe(texts, vocab_size, SPECIAL_TOKENS)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]),
    ])
    return tokenizer


def build_tokenizer(world: World, vocab_size: int = DEFAULT_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """The transformers tokenizer of the built-in model (deterministic given the world)."""
    backend = train_tokenizer(corpus(world), vocab_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE},
        padding_side="left",
        model_max_length=512,
    )
    return tokenizer
