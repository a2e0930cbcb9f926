"""The built-in visual world and the small LLaVA model trained on it.

Public API:

- :func:`builtin_path` - directory of the shipped model (loads with plain transformers);
- :func:`load_world` - the :class:`World` a model directory was trained on (from ``world.json``);
- :func:`build_world` / :class:`WorldConfig` - generate a world from a seed;
- :func:`fixed_render` / :func:`render` - draw subjects; :func:`user_prompt` - the prompt format;
- :func:`fact_question` / :func:`attribute_question` / :func:`fact_templates` - questions;
- :func:`make_records` / :func:`write_edits` - edit benchmarks (MMEdit format + scope probes);
- :func:`evaluate_model` - the accuracy report of ``editscope world eval``.
"""

from __future__ import annotations

import json
from pathlib import Path

from editscope.world.edits import EDIT_SPLITS, make_records, write_edits
from editscope.world.render import IMAGE_SIZE, Augmentation, fixed_render, render
from editscope.world.templates import (
    Question,
    answer_text,
    attribute_question,
    fact_question,
    fact_templates,
    user_prompt,
)
from editscope.world.world import (
    ATTRIBUTES,
    FACTS,
    WORLD_FILE,
    Subject,
    World,
    WorldConfig,
    build_world,
    split_subjects,
)

__all__ = [
    "ATTRIBUTES", "Augmentation", "EDIT_SPLITS", "FACTS", "IMAGE_SIZE", "Question", "Subject", "World",
    "WorldConfig", "answer_text", "attribute_question", "build_world", "builtin_path", "evaluate_model",
    "fact_question", "fact_templates", "fixed_render", "load_world", "make_records", "render",
    "split_subjects", "user_prompt", "write_edits",
]


def builtin_path() -> Path:
    """The directory of the shipped built-in model (``src/editscope/builtin``)."""
    path = Path(__file__).resolve().parent.parent / "builtin"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the built-in model is missing: no config.json in {path}")
    return path


def load_world(model_dir: Path | str | None = None) -> World:
    """The world described by ``model_dir/world.json`` (default: the built-in model's)."""
    directory = Path(model_dir) if model_dir is not None else builtin_path()
    meta_path = directory / WORLD_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"no {WORLD_FILE} in {directory}: not a world model directory")
    meta = json.loads(meta_path.read_text())
    return build_world(WorldConfig.from_dict(meta["train"]["world"]))


def evaluate_model(model_dir: Path | str | None = None, stride: int = 1) -> dict[str, float]:
    """Accuracy of the model in ``model_dir`` (default: built-in) on its world; see
    :mod:`editscope.world.evaluate`. Loads with plain transformers, in float32."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from editscope.world.data import Encoder
    from editscope.world.evaluate import evaluate

    directory = Path(model_dir) if model_dir is not None else builtin_path()
    world = load_world(directory)
    model = LlavaForConditionalGeneration.from_pretrained(directory, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(directory)
    encoder = Encoder(processor.tokenizer, int(model.config.image_seq_length))
    return evaluate(model, encoder, world, stride=stride)
