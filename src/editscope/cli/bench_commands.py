"""CLI commands of the bench area: ``editscope bench`` and ``editscope bench-merge``."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer


def _command_line(ctx: typer.Context) -> str:
    """The command as given: the options set on the command line, in their canonical form."""
    words = ["editscope", ctx.info_name or "bench"]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params[param.name]
        flag = param.opts[0]
        if param.param_type_name == "argument":
            words += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        elif isinstance(value, bool):
            if value:
                words.append(flag)
        else:
            words += [flag, str(value)]
    return " ".join(shlex.quote(w) for w in words)


def bench(
    ctx: typer.Context,
    data: str = typer.Option(..., "--data", help="world:test | world:dev | mmedit:FILE | mmedit-ic:FILE | vlkeb:FILE"),
    out: Path = typer.Option(..., "--out", help="directory for results.json, summary.md and the plots"),
    model: str = typer.Option("builtin", "--model", help="'builtin' or a local checkpoint directory"),
    images: Optional[str] = typer.Option(None, "--images", help="image root (default: the data file's folder)"),
    editors: str = typer.Option("scopememory,scopeedit,more,lora,ft,grace", "--editors",
                                help="comma-separated: scopememory, scopeedit, more, lora, ft, grace, none; a variant "
                                "NAME@TAG (e.g. scopeedit@release) takes its overrides from --editor-config "
                                "under that full name"),
    edits: int = typer.Option(100, "--edits", help="length of the edit stream (re-edits facts beyond the data)"),
    checkpoints: str = typer.Option("1,10,100,1000", "--checkpoints", help="retention checkpoints"),
    facts: Optional[int] = typer.Option(None, "--facts", help="use only the first N records (a stream longer "
                                        "than N re-edits them: more edits per fact, fewer live facts)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="ScopeEdit preset name or YAML file "
                                         "(default: 'builtin' for the built-in model, else the reference values)"),
    seed: int = typer.Option(0, "--seed", help="seed of the stream order and re-edit values"),
    editor_config: Optional[str] = typer.Option(None, "--editor-config",
                                                help="YAML {editor: {key: value}} overriding editor configs"),
    threshold: float = typer.Option(0.5, "--scope-threshold", help="in-scope transfer threshold of the scope classes"),
    no_exact_match: bool = typer.Option(False, "--no-exact-match", help="skip greedy generation (faster)"),
    no_record_anchors: bool = typer.Option(False, "--no-record-anchors",
                                           help="do not pass each record's locality pair to the editor as anchors"),
    sibling_anchors: bool = typer.Option(False, "--sibling-anchors",
                                         help="also pass each world record's unscored sibling questions (other "
                                         "facts of the subject on the edit image) to the editor as anchors"),
    scope_examples: int = typer.Option(0, "--scope-examples", min=0,
                                       help="give each edit N scope examples of each kind: N 'also' inputs that "
                                       "must follow it and N 'never' inputs that must keep their answers (world "
                                       "splits: more held-out renders of the subject and of its look-alike, never "
                                       "a scored probe; a records file must carry scope_also/scope_never); only "
                                       "editors that use examples (scopememory) may run with N > 0"),
    device: Optional[str] = typer.Option(None, "--device", help="e.g. cpu or cuda (default: where the model loads)"),
    reference: Optional[str] = typer.Option(None, "--reference",
                                            help="reference set of editors with a reference prior (ScopeEdit's prior section, ScopeMemory's "
                                            "reference_size > 0): 'world' "
                                            "(a world model's training distribution, the default) or a JSON "
                                            "list of prompt/answer/image objects"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (1 is fastest for "
                                          "small models on a busy machine)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Compare editors on one model, one stream of edits, in the same order."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    from editscope.evaluation.bench import BenchSpec, parse_checkpoints, parse_list, run_bench
    from editscope.evaluation.data import DataError

    try:
        spec = BenchSpec(
            model=model, data=data, out=out, editors=parse_list(editors, "--editors"), edits=edits,
            checkpoints=parse_checkpoints(checkpoints), facts=facts, images=images, preset=preset, seed=seed,
            scope_threshold=threshold, exact_match=not no_exact_match, record_anchors=not no_record_anchors,
            sibling_anchors=sibling_anchors,
            scope_examples=scope_examples,
            editor_config=editor_config,
            device=device,
            reference=reference,
        )
        results = run_bench(spec, _command_line(ctx), progress=not quiet, echo=typer.echo)
    except (DataError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo((out / "summary.md").read_text())
    typer.echo(f"wrote {out / 'results.json'}, {out / 'summary.md'} and plots "
               f"({len(results['editors'])} editors)")


def bench_merge(
    ctx: typer.Context,
    results: list[Path] = typer.Argument(..., help="results.json files of runs on the same stream"),
    out: Path = typer.Option(..., "--out", help="directory for the merged results.json, summary.md and plots"),
    replace: bool = typer.Option(
        False, "--replace", help="an editor in more than one file: keep the run of the later file (re-run one editor)"
    ),
) -> None:
    """Merge bench runs of the same stream made in separate processes (editors split across
    cores) into one results.json, summary.md and plots. With --replace, a merged results.json
    and a new run of one of its editors give the merge with that editor re-run."""
    import json
    from datetime import datetime, timezone

    from editscope.evaluation.plots import write_plots
    from editscope.evaluation.merge import merge_results
    from editscope.evaluation.report import write_results, write_summary

    try:
        parts = [json.loads(Path(p).read_text()) for p in results]
        created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        merged = merge_results(parts, _command_line(ctx), created, replace=replace)
    except (OSError, ValueError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    write_results(merged, out)
    write_summary(merged, out)
    write_plots(merged, out)
    typer.echo(f"merged {len(parts)} runs ({', '.join(merged['editors'])}) into {out}")


def bench_report(
    results: Path = typer.Argument(..., help="a results.json written by bench or bench-merge"),
    out: Path = typer.Option(None, "--out", help="directory for summary.md and the plots (default: beside results.json)"),
) -> None:
    """Write summary.md and the plots again from a results.json (for instance after an upgrade
    that adds a table or a plot); the results themselves are not changed."""
    import json

    from editscope.evaluation.plots import write_plots
    from editscope.evaluation.report import write_summary

    out = out if out is not None else results.parent
    try:
        loaded = json.loads(results.read_text())
        if not isinstance(loaded, dict) or not isinstance(loaded.get("editors"), dict) or "config" not in loaded:
            raise ValueError("not a bench results.json (no 'editors' and 'config')")
        summary = write_summary(loaded, out)
        plots = write_plots(loaded, out)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        typer.echo(f"error: {results}: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"wrote {summary} and {len(plots)} plots ({', '.join(p.name for p in plots)})")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.command("bench")(bench)
    app.command("bench-merge")(bench_merge)
    app.command("bench-report")(bench_report)
