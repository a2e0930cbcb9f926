"""Train the built-in model from scratch on the world (CPU, deterministic given the seed).

Every step mixes three kinds of examples: visual fact questions and visual attribute questions
(one image sub-batch) and text-only fact questions (one text sub-batch, which needs no padding
to the image length). Images are fresh random augmentations most of the time and one of the
fixed "seen" renders otherwise. AdamW with linear warm-up and cosine decay.

Two training-only terms help the vision side, which a randomly initialised ViT learns only very
slowly through the decoder alone (measured: shape and pattern questions stayed at chance for 600
steps): linear classifiers of the visual attributes and of the subject's identity on the pooled
vision features (:class:`AuxiliaryHeads`), and a penalty on the scale of the projector's input
and output (:func:`feature_scale`). Neither is saved: the shipped model is a stock LLaVA.
"""

from __future__ import annotations

import json
import logging
import math
import random
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from tqdm import tqdm

from editscope.world.data import Encoded, Encoder, collate, shifted_loss_terms
from editscope.world.evaluate import SEEN_RENDERS, evaluate
from editscope.world.modeling import ModelSpec, build_model, build_processor
from editscope.world.render import Augmentation, fixed_render, render
from editscope.world.templates import ATTRIBUTE_TEMPLATES, attribute_question, fact_question, fact_templates
from editscope.world.tokenizer import DEFAULT_VOCAB_SIZE, build_tokenizer
from editscope.world.world import ATTRIBUTE_VALUES, ATTRIBUTES, FACTS, WORLD_FILE, World, WorldConfig, build_world

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters. ``visual``, ``attribute`` and ``text`` are the number of each
    kind of example per step; ``fresh`` is the probability that an image is a new augmentation."""

    seed: int = 0
    steps: int = 6000
    visual: int = 24
    attribute: int = 12
    text: int = 16
    fresh: float = 0.75
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.01
    vision_lr_scale: float = 1.0
    feature_penalty: float = 1e-2
    auxiliary: float = 1.0
    grad_clip: float = 1.0
    threads: int = 1
    workers: int = 1
    vocab_size: int = DEFAULT_VOCAB_SIZE
    eval_every: int = 1000
    save_every: int = 500
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelSpec = field(default_factory=ModelSpec)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup < 0:
            raise ValueError(f"TrainConfig needs steps >= 1 and warmup >= 0, got {self.steps}, {self.warmup}")
        if min(self.visual, self.attribute, self.text) < 1:
            raise ValueError("TrainConfig needs at least one example of each kind per step")
        if self.workers < 1 or self.threads < 1:
            raise ValueError(f"TrainConfig needs workers >= 1 and threads >= 1, got {self.workers}, {self.threads}")
        if not 0.0 <= self.fresh <= 1.0:
            raise ValueError(f"TrainConfig.fresh must be in [0, 1], got {self.fresh}")


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the last step."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(config.steps - config.warmup, 1)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


class StepExamples(NamedTuple):
    """One step's examples: with images (visual fact and attribute questions), without images,
    and the subject of each image example (in order)."""

    images: list[Encoded]
    texts: list[Encoded]
    image_subjects: list[int]


class Sampler:
    """Draws the examples of each step from a seeded :class:`random.Random`."""

    def __init__(self, world: World, encoder: Encoder, config: TrainConfig, rank: int = 0) -> None:
        self.world, self.encoder, self.config = world, encoder, config
        self.rng = random.Random(f"train/{config.seed}/{rank}")
        self.seen = {(s.index, k): fixed_render(s, "seen", k, world.config.seed)
                     for s in world.subjects for k in range(SEEN_RENDERS)}

    def _image(self, subject_index: int):
        if self.rng.random() < self.config.fresh:
            return render(self.world.subject(subject_index), Augmentation.sample(self.rng))
        return self.seen[(subject_index, self.rng.randrange(SEEN_RENDERS))]

    def step(self) -> StepExamples:
        """The examples of one step."""
        rng, subjects = self.rng, self.world.subjects
        images: list[Encoded] = []
        image_subjects: list[int] = []
        for _ in range(self.config.visual):
            s = rng.choice(subjects)
            fact = rng.choice(FACTS)
            q = fact_question(s, fact, rng.choice(fact_templates(fact, "train")), image=True)
            images.append(self.encoder.encode(q, self._image(s.index)))
            image_subjects.append(s.index)
        for _ in range(self.config.attribute):
            s = rng.choice(subjects)
            attribute = rng.choice(ATTRIBUTES)
            q = attribute_question(s, attribute, rng.choice(ATTRIBUTE_TEMPLATES[attribute]["train"]))
            images.append(self.encoder.encode(q, self._image(s.index)))
            image_subjects.append(s.index)
        texts = []
        for _ in range(self.config.text):
            s = rng.choice(subjects)
            fact = rng.choice(FACTS)
            q = fact_question(s, fact, rng.choice(fact_templates(fact, "train")), image=False)
            texts.append(self.encoder.encode(q, None))
        return StepExamples(images, texts, image_subjects)


class ProjectorTap:
    """Keeps the projector's input (the selected vision features, ``(n_images, tokens, vision
    hidden)``) and output of each training forward pass, for the two training-only terms below."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.captured: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._handle = model.model.multi_modal_projector.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if module.training:
            self.captured.append((inputs[0], output))

    def pop(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        captured, self.captured = self.captured, []
        return captured

    def remove(self) -> None:
        self._handle.remove()


def feature_scale(captured: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Mean square of the projector's input and output.

    The decoder normalises every token (RMSNorm), so nothing in the task loss stops the vision
    tower's residual stream and the projected image features from growing without bound; once
    they are hundreds of times larger than the text embeddings the vision side stops learning.
    Training adds ``feature_penalty`` times this to the loss.
    """
    if not captured:
        return torch.zeros(())
    return torch.stack([x.pow(2).mean() + y.pow(2).mean() for x, y in captured]).sum()


class AuxiliaryHeads(torch.nn.Module):
    """Training-only linear classifiers on the mean-pooled vision features: one per visual
    attribute and one for the subject's identity. They give the vision tower a direct signal
    (a randomly initialised ViT barely learns shapes through the decoder alone) and are thrown
    away after training; the saved model is the stock LLaVA."""

    def __init__(self, world: World, hidden: int) -> None:
        super().__init__()
        self.world = world
        self.attributes = torch.nn.ModuleDict(
            {a: torch.nn.Linear(hidden, len(ATTRIBUTE_VALUES[a])) for a in ATTRIBUTES})
        self.identity = torch.nn.Linear(hidden, len(world.subjects))

    def loss(self, features: torch.Tensor, subjects: list[int]) -> torch.Tensor:
        """Mean cross-entropy of all heads; ``features`` (n_images, tokens, hidden)."""
        pooled = features.mean(dim=1)
        target = torch.tensor(subjects)
        losses = [torch.nn.functional.cross_entropy(self.identity(pooled), target)]
        for attribute, head in self.attributes.items():
            values = ATTRIBUTE_VALUES[attribute]
            labels = torch.tensor([values.index(self.world.subject(i).look[attribute]) for i in subjects])
            losses.append(torch.nn.functional.cross_entropy(head(pooled), labels))
        return torch.stack(losses).mean()


def _param_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices except embeddings; the vision tower and projector
    learn ``vision_lr_scale`` times faster."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        vision = "vision_tower" in name or "multi_modal_projector" in name
        decay = param.ndim >= 2 and "embed" not in name
        groups.setdefault((vision, decay), []).append(param)
    return [{"params": params, "weight_decay": config.weight_decay if decay else 0.0,
             "lr_scale": config.vision_lr_scale if vision else 1.0}
            for (vision, decay), params in sorted(groups.items())]


def save_model(model, processor, out: Path, meta: dict[str, Any], half: bool = True) -> None:
    """Write a directory loadable by ``from_pretrained``, with ``world.json`` beside it."""
    out.mkdir(parents=True, exist_ok=True)
    to_save = model
    if half:
        to_save = type(model)(model.config)
        to_save.load_state_dict(model.state_dict())
        to_save = to_save.to(torch.float16)
        to_save.generation_config = model.generation_config
    to_save.save_pretrained(out)
    processor.save_pretrained(out)
    (out / WORLD_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def config_dict(config: TrainConfig) -> dict[str, Any]:
    data = asdict(config)
    data["world"] = config.world.to_dict()
    data["model"] = config.model.to_dict()
    return data


def train(config: TrainConfig, out: Path, work_dir: Path | None = None, command: str = "",
          max_minutes: float | None = None, progress: bool = True, init: Path | None = None) -> dict[str, Any]:
    """Train, save the half-precision model to ``out`` and return the ``world.json`` data.

    With ``config.workers`` > 1 the work is data-parallel over that many processes (gloo,
    gradients averaged every step; each worker draws its own examples). ``work_dir`` receives a
    loadable snapshot (``latest/``) every ``save_every`` steps. ``max_minutes`` stops early
    (then the result depends on the machine's speed). ``init`` continues from the weights of a
    model directory saved by an earlier run on the same world (a second stage with its own
    schedule); its ``world.json`` is kept under ``"previous"``.
    """
    if config.workers == 1:
        _train_worker(0, config, out, work_dir, command, max_minutes, progress, 0, init)
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        torch.multiprocessing.spawn(_train_worker, nprocs=config.workers,
                                    args=(config, out, work_dir, command, max_minutes, progress, port, init))
    return json.loads((out / WORLD_FILE).read_text())


def _average_gradients(model: torch.nn.Module, workers: int) -> None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= workers
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _train_worker(rank: int, config: TrainConfig, out: Path, work_dir: Path | None, command: str,
                  max_minutes: float | None, progress: bool, port: int, init: Path | None) -> None:
    torch.set_num_threads(config.threads)
    if config.workers > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=config.workers)
    lead = rank == 0
    world = build_world(config.world)
    tokenizer = build_tokenizer(world, config.vocab_size)
    processor = build_processor(config.model, tokenizer)
    model = build_model(config.model, tokenizer, config.seed)
    previous = None
    if init is not None:
        previous = json.loads((init / WORLD_FILE).read_text())
        if previous["train"]["world"] != config.world.to_dict() or previous["train"]["model"] != config.model.to_dict():
            raise ValueError(f"{init} was trained on another world or model spec than this run")
        weights = type(model).from_pretrained(init, dtype=torch.float32).state_dict()
        model.load_state_dict(weights, strict=True)
    encoder = Encoder(tokenizer, config.model.image_tokens)
    sampler = Sampler(world, encoder, config, rank)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model has %.2fM parameters", n_params / 1e6)
    heads = AuxiliaryHeads(world, config.model.vision_hidden)
    groups = _param_groups(model, config) + [{"params": list(heads.parameters()), "weight_decay": 0.0,
                                              "lr_scale": config.vision_lr_scale}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98))
    tap = ProjectorTap(model)
    meta: dict[str, Any] = {"train": config_dict(config), "command": command, "parameters": n_params}
    if previous is not None:
        meta["init"] = str(init)
        meta["previous"] = previous
    start = time.monotonic()
    bar = tqdm(range(config.steps), desc="train", mininterval=10.0, disable=not (progress and lead))
    step = 0
    for step in bar:
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step) * group["lr_scale"]
        total_loss, total_count = torch.zeros(()), torch.zeros((), dtype=torch.long)
        examples = sampler.step()
        for part in (examples.images, examples.texts):
            batch = collate(part, tokenizer.pad_token_id)
            labels = batch.pop("labels")
            loss, count = shifted_loss_terms(model(**batch).logits, labels)
            total_loss, total_count = total_loss + loss, total_count + count
        loss = total_loss / total_count
        captured = tap.pop()
        scale = feature_scale(captured)
        aux = heads.loss(captured[0][0], examples.image_subjects)
        optimizer.zero_grad(set_to_none=True)
        (loss + config.feature_penalty * scale + config.auxiliary * aux).backward()
        if config.workers > 1:
            _average_gradients(model, config.workers)
            _average_gradients(heads, config.workers)
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(heads.parameters()), config.grad_clip)
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", feat=f"{scale.item():.2f}", aux=f"{aux.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False)
        done = step + 1
        if lead and config.eval_every and done % config.eval_every == 0 and done < config.steps:
            quick = evaluate(model, encoder, world, stride=8)
            logger.info("step %d quick eval %s", done, quick)
            bar.write(f"step {done} loss {loss.item():.4f} quick eval {json.dumps(quick)}")
        if lead and work_dir is not None and config.save_every and done % config.save_every == 0:
            save_model(model, processor, work_dir / "latest", {**meta, "steps_done": done})
        stop = torch.tensor(int(max_minutes is not None and time.monotonic() - start > 60 * max_minutes))
        if config.workers > 1:
            dist.broadcast(stop, src=0)
        if stop.item():
            logger.warning("stopping at step %d of %d after %.1f minutes", done, config.steps, max_minutes)
            break
    tap.remove()
    meta["steps_done"] = step + 1
    meta["train_wall_time_s"] = round(time.monotonic() - start, 1)
    if lead:
        save_model(model, processor, out, meta)
    if config.workers > 1:
        dist.barrier()
        dist.destroy_process_group()


def save_metrics(out: Path, metrics: dict[str, float]) -> None:
    """Record the final evaluation of the model in ``out`` in its ``world.json``."""
    path = out / WORLD_FILE
    meta = json.loads(path.read_text())
    meta["metrics"] = metrics
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
