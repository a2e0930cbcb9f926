"""CLI commands of the world area: ``editscope world train | eval | make-edits``."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

world_app = typer.Typer(help="The built-in visual world and its trained model.", no_args_is_help=True)


@world_app.command("train")
def train_command(
    out: Path = typer.Option(Path("runs/world-model"), "--out", help="Directory of the trained model."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Periodic snapshots go to WORK_DIR/latest."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation and data sampling."),
    world_seed: int = typer.Option(1234, "--world-seed", help="Seed of the world."),
    steps: int = typer.Option(3000, "--steps", help="Optimiser steps (the schedule depends on it)."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop early after this many minutes."),
    lr: float = typer.Option(1.5e-3, "--lr"),
    warmup: int = typer.Option(200, "--warmup"),
    threads: int = typer.Option(1, "--threads", help="torch threads per worker (1 is fastest on a shared machine)."),
    workers: int = typer.Option(1, "--workers", help="Data-parallel worker processes (gradients averaged)."),
    vision_lr_scale: float = typer.Option(1.0, "--vision-lr-scale", help="LR multiplier of vision tower + projector."),
    auxiliary: float = typer.Option(1.0, "--auxiliary", help="Weight of the training-only vision classifiers."),
    feature_penalty: float = typer.Option(1e-2, "--feature-penalty", help="Weight of the image-feature scale penalty."),
    visual: int = typer.Option(20, "--visual", help="Visual fact questions per step and worker."),
    attribute: int = typer.Option(16, "--attribute", help="Visual attribute questions per step and worker."),
    text: int = typer.Option(16, "--text", help="Text-only fact questions per step and worker."),
    eval_every: int = typer.Option(1000, "--eval-every", help="Quick evaluation every N steps (0: never)."),
    save_every: int = typer.Option(500, "--save-every", help="Snapshot every N steps (needs --work-dir)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Continue from this model directory (same world)."),
    final_eval: bool = typer.Option(True, "--final-eval/--no-final-eval", help="Evaluate the saved model."),
) -> None:
    """Train the built-in model from scratch (deterministic given the seeds)."""
    from editscope.world import WorldConfig, evaluate_model
    from editscope.world.train import TrainConfig, save_metrics, train

    logging.getLogger("editscope").setLevel(logging.INFO)
    config = TrainConfig(seed=seed, steps=steps, lr=lr, warmup=warmup, threads=threads, workers=workers,
                         vision_lr_scale=vision_lr_scale, feature_penalty=feature_penalty, auxiliary=auxiliary,
                         visual=visual, attribute=attribute,
                         text=text, eval_every=eval_every,
                         save_every=save_every, world=WorldConfig(seed=world_seed))
    command = "editscope world " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    meta = train(config, out, work_dir=work_dir, command=command, max_minutes=minutes, init=init)
    typer.echo(f"trained {meta['steps_done']} steps in {meta['train_wall_time_s']} s; saved to {out}")
    if final_eval:
        metrics = evaluate_model(out)
        save_metrics(out, metrics)
        typer.echo(json.dumps(metrics))


@world_app.command("eval")
def eval_command(
    model: Optional[Path] = typer.Option(None, "--model", help="Model directory (default: the built-in model)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    stride: int = typer.Option(1, "--stride", help="Score every N-th item only (quick estimate)."),
) -> None:
    """Accuracy of a world model: greedy answer equals the fact."""
    from editscope.world import evaluate_model

    metrics = evaluate_model(model, stride=stride)
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    for name, value in metrics.items():
        typer.echo(f"{name:>18}  {value:.4f}")


@world_app.command("make-edits")
def make_edits_command(
    split: str = typer.Option(..., "--split", help="dev or test (disjoint subjects)."),
    out: Path = typer.Option(..., "--out", help="Output directory: SPLIT.json and images/."),
    n: Optional[int] = typer.Option(None, "--n", help="Number of records (default: one per subject)."),
    model: Optional[Path] = typer.Option(None, "--model", help="World model directory (default: built-in)."),
) -> None:
    """Write an edit benchmark in the MMEdit JSON format (plus scope probes and images)."""
    from editscope.world import EDIT_SPLITS, load_world, write_edits

    if split not in EDIT_SPLITS:
        raise typer.BadParameter(f"--split must be one of {', '.join(EDIT_SPLITS)}, got {split!r}")
    path = write_edits(load_world(model), split, out, n)
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.add_typer(world_app, name="world")
