"""Encoding questions for training and evaluation of the built-in model.

An encoded example is ``[<s>] + prompt (with <image> expanded to the image tokens) + answer +
[</s>]`` with labels only on the answer and the end-of-sequence token: exactly what the
processor produces for ``user_prompt(q) + answer_text(a)`` followed by ``</s>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from editscope.world.modeling import pixel_tensor
from editscope.world.templates import Question, answer_text, user_prompt
from editscope.world.tokenizer import IMAGE

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """Token ids (T,) and labels (T,) of one example; ``image`` is its render or None."""

    input_ids: list[int]
    labels: list[int]
    image: Image.Image | None


class Encoder:
    """Turns :class:`Question` objects into token ids, caching the tokenisation of each text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.image_tokens = image_tokens
        self.image_id = tokenizer.convert_tokens_to_ids(IMAGE)
        self._prompts: dict[tuple[str, bool], list[int]] = {}
        self._answers: dict[str, list[int]] = {}

    def prompt_ids(self, question: str, image: bool) -> list[int]:
        """``<s>`` + the prompt's ids, with ``<image>`` expanded."""
        key = (question, image)
        if key not in self._prompts:
            ids = self.tokenizer(user_prompt(question, image)).input_ids
            expanded: list[int] = []
            for token in ids:
                expanded.extend([token] * self.image_tokens if token == self.image_id else [token])
            self._prompts[key] = expanded
        return self._prompts[key]

    def answer_ids(self, answer: str) -> list[int]:
        """The answer's ids (with its leading space) followed by ``</s>``."""
        if answer not in self._answers:
            ids = self.tokenizer(answer_text(answer), add_special_tokens=False).input_ids
            self._answers[answer] = ids + [self.tokenizer.eos_token_id]
        return self._answers[answer]

    def encode(self, question: Question, image: Image.Image | None) -> Encoded:
        if question.image != (image is not None):
            raise ValueError(f"question {question.text!r} has image={question.image} but image is {image}")
        prompt = self.prompt_ids(question.text, question.image)
        answer = self.answer_ids(question.answer)
        return Encoded(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, image)


def collate(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: ``input_ids``, ``attention_mask``, ``labels`` (B, T) and, when any
    example has an image, ``pixel_values`` (n_images, 3, H, W) in batch order."""
    length = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    images = [e.image for e in examples if e.image is not None]
    if images:
        batch["pixel_values"] = pixel_tensor(images)
    return batch


def shifted_loss_terms(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of next-token predictions on labelled positions and their count.

    ``logits`` (B, T, V), ``labels`` (B, T); position t predicts label t + 1.
    """
    pred = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    target = labels[:, 1:].reshape(-1)
    loss = torch.nn.functional.cross_entropy(pred, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, (target != IGNORE_INDEX).sum()


def exact_matches(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row, whether the argmax predicts every labelled token (answer and ``</s>``) — the
    same as greedy decoding producing exactly the answer. ``(B,)`` bool."""
    pred = logits[:, :-1].argmax(-1)
    target = labels[:, 1:]
    labelled = target != IGNORE_INDEX
    return ((pred == target) | ~labelled).all(dim=1)
