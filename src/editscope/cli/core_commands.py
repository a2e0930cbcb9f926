"""Core CLI commands: ``editscope cost`` (the cost benchmark) and ``editscope demo``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

COST_MODELS = ("tiny-llava", "builtin")


def _vlm_factory(model: str):
    if model == "tiny-llava":
        from editscope.benchmarks.tiny import build_tiny_llava
        from editscope.models import VisionLanguageModel

        def factory():
            built, processor = build_tiny_llava(seed=0)
            return VisionLanguageModel(built, processor)

        return factory
    from editscope.models import load

    return lambda: load(model)


def cost(
    model: str = typer.Option("tiny-llava", "--model", help="tiny-llava (built from a config), builtin, or a checkpoint PATH."),
    edits: int = typer.Option(1000, "--edits", min=1, help="Number of edits in the stream."),
    editor: str = typer.Option("scopeedit", "--editor", help="scopeedit or more."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Preset name or YAML file (default: tiny for tiny-llava, builtin otherwise)."),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(1, "--threads", min=1, help="torch intra-op threads (1 is fastest for tiny models)."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
) -> None:
    """Apply a stream of edits and print per-edit time (start vs end), the editor's overhead
    over its forward+backward passes, state bytes and peak memory."""
    import torch

    from editscope.benchmarks.cost import check_editor, run_cost
    from editscope.config import load_preset

    torch.set_num_threads(threads)
    try:
        check_editor(editor)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--editor") from None
    config = load_preset(preset or ("tiny" if model == "tiny-llava" else "builtin"))
    image_size = 32 if model == "tiny-llava" else 64
    figures = run_cost(_vlm_factory(model), edits=edits, editor=editor, config=config, seed=seed, image_size=image_size)
    figures["model"] = model
    figures["command"] = " ".join(["editscope", "cost", *sys.argv[2:]]) if len(sys.argv) > 1 else "editscope cost"
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        typer.echo(f"{key:28s} {value}")


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where the report and plots go."),
    edits: int = typer.Option(50, "--edits", min=1, help="How many test edits to apply."),
    editor: str = typer.Option("scopememory", "--editor",
                               help="scopememory, scopeedit, more, lora, ft, grace or none."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch intra-op threads (1 is fastest for the small built-in model)."),
) -> None:
    """Load the built-in model, apply test edits one by one with ScopeEdit, print what
    transferred and what leaked, write a JSON report and plots."""
    import torch

    from editscope.cli.demo import run_demo

    torch.set_num_threads(threads)

    run_demo(out, edits, editor, typer.echo)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("cost")(cost)
