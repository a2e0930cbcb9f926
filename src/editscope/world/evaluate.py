"""Accuracy of a model on the world: greedy answer equals the fact.

Scoring is teacher-forced: an item is correct when the argmax at every answer position (and at
the position after the answer, which must predict ``</s>``) is the reference token. With greedy
decoding that is exactly "the generated answer equals the fact", in one forward pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from PIL import Image

from editscope.world.data import Encoder, collate, exact_matches
from editscope.world.render import fixed_render
from editscope.world.templates import (
    ATTRIBUTE_TEMPLATES,
    Question,
    attribute_question,
    fact_question,
    fact_templates,
)
from editscope.world.world import ATTRIBUTES, FACTS, World

logger = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("seen", "heldout_render", "heldout_template", "heldout_both", "text_only",
                            "visual_attributes")
SEEN_RENDERS = 4
HELDOUT_RENDERS = 4


@dataclass(frozen=True)
class EvalItem:
    """A question and the render it is asked with (``("seen"|"heldout", index)`` or None)."""

    question: Question
    render: tuple[str, int] | None


def eval_items(world: World, metric: str) -> list[EvalItem]:
    """The items of ``metric`` (see :data:`METRICS`): one per subject and fact (or attribute),
    rotating through renders and templates deterministically."""
    items: list[EvalItem] = []
    for s in world.subjects:
        if metric == "visual_attributes":
            for k, attribute in enumerate(ATTRIBUTES):
                templates = ATTRIBUTE_TEMPLATES[attribute]["train"]
                question = attribute_question(s, attribute, templates[(s.index + k) % len(templates)])
                items.append(EvalItem(question, ("heldout", (s.index + k) % HELDOUT_RENDERS)))
            continue
        for k, fact in enumerate(FACTS):
            heldout_template = metric in ("heldout_template", "heldout_both")
            templates = fact_templates(fact, "heldout" if heldout_template else "train")
            template = templates[(s.index + k) % len(templates)]
            if metric == "text_only":
                items.append(EvalItem(fact_question(s, fact, template, image=False), None))
                continue
            if metric in ("seen", "heldout_template"):
                render = ("seen", (s.index + k) % SEEN_RENDERS)
            elif metric in ("heldout_render", "heldout_both"):
                render = ("heldout", (s.index + k) % HELDOUT_RENDERS)
            else:
                raise ValueError(f"unknown metric {metric!r}; metrics are {METRICS}")
            items.append(EvalItem(fact_question(s, fact, template, image=True), render))
    return items


def _batches(items: list[EvalItem], size: int) -> Iterator[list[EvalItem]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@torch.no_grad()
def score_items(model: torch.nn.Module, encoder: Encoder, world: World, items: list[EvalItem],
                batch_size: int = 64) -> list[bool]:
    """Correctness of each item under greedy decoding (teacher-forced check)."""
    model.eval()
    pad_id = encoder.tokenizer.pad_token_id
    results: list[bool] = []
    for chunk in _batches(items, batch_size):
        encoded = []
        for item in chunk:
            image: Image.Image | None = None
            if item.render is not None:
                subject = world.subject(item.question.subject)
                image = fixed_render(subject, item.render[0], item.render[1], world.config.seed)
            encoded.append(encoder.encode(item.question, image))
        batch = collate(encoded, pad_id)
        labels = batch.pop("labels")
        pixel_values = batch.get("pixel_values")
        if pixel_values is not None:
            batch["pixel_values"] = pixel_values.to(model.dtype)
        logits = model(**batch).logits
        results.extend(exact_matches(logits, labels).tolist())
    return results


def evaluate(model: torch.nn.Module, encoder: Encoder, world: World, metrics: tuple[str, ...] = METRICS,
             stride: int = 1, progress: Callable[[str], None] | None = None) -> dict[str, float]:
    """Accuracy per metric; ``stride`` > 1 scores every ``stride``-th item (a quick estimate)."""
    accuracy: dict[str, float] = {}
    for metric in metrics:
        items = eval_items(world, metric)[::stride]
        correct = score_items(model, encoder, world, items)
        accuracy[metric] = round(sum(correct) / len(correct), 4)
        logger.info("%s: %.4f over %d items", metric, accuracy[metric], len(correct))
        if progress is not None:
            progress(metric)
    return accuracy
