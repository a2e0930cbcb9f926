"""The ``editscope bench`` job as a library function: load a model and a benchmark, run the
chosen editors on the same stream, write ``results.json``, ``summary.md`` and the plots."""

from __future__ import annotations

import dataclasses
import logging
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import yaml

from editscope.evaluation.data import DataError, EditCase, load_records, parse_data_spec
from editscope.evaluation.examples import check_scope_examples
from editscope.evaluation.stream import build_stream
from editscope.evaluation.plots import write_plots
from editscope.evaluation.protocol import EditorRun, ProtocolConfig, run_comparison
from editscope.evaluation.report import build_results, write_results, write_summary

log = logging.getLogger(__name__)

DEFAULT_EDITORS: tuple[str, ...] = ("scopememory", "scopeedit", "more", "lora", "ft", "grace")
BUILTIN_PRESET = "builtin"


@dataclass(frozen=True)
class BenchSpec:
    """Everything a bench run depends on (recorded in ``results.json``)."""

    model: str
    data: str
    out: Path
    editors: tuple[str, ...] = DEFAULT_EDITORS
    edits: int = 100
    checkpoints: tuple[int, ...] = (1, 10, 100, 1000)
    facts: int | None = None
    images: str | None = None
    preset: str | None = None
    seed: int = 0
    scope_threshold: float = 0.5
    exact_match: bool = True
    record_anchors: bool = True
    sibling_anchors: bool = False
    editor_config: str | None = None
    device: str | None = None
    reference: str | None = None
    scope_examples: int = 0
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from editscope.editors.registry import EDITORS

        if not self.editors:
            raise ValueError("no editors given")
        bad = [e for e in self.editors if "@" in e and not e.split("@", 1)[1]]
        if bad:
            raise ValueError(f"editor variant(s) {bad} need a tag after '@' (e.g. scopeedit@release)")
        unknown = [e for e in self.editors if editor_kind(e) not in EDITORS]
        if unknown:
            raise ValueError(f"unknown editor(s) {unknown}; available: {', '.join(EDITORS)}")
        if len(set(self.editors)) != len(self.editors):
            raise ValueError(f"editor listed twice in {list(self.editors)}")
        if self.edits < 1:
            raise ValueError(f"--edits must be >= 1, got {self.edits}")
        if self.facts is not None and self.facts < 1:
            raise ValueError(f"--facts must be >= 1, got {self.facts}")
        check_scope_examples(self.scope_examples)
        if self.scope_examples:
            refusing = [e for e in self.editors if not EDITORS[editor_kind(e)].editor.uses_examples]
            if refusing:
                takers = [name for name, entry in EDITORS.items() if entry.editor.uses_examples]
                raise ValueError(f"--scope-examples {self.scope_examples}: editor(s) {refusing} cannot use scope "
                                 f"examples; editors that can: {', '.join(takers) or 'none'}")


def editor_kind(name: str) -> str:
    """The editor behind a bench entry: ``scopeedit`` for ``scopeedit`` and for a variant
    ``scopeedit@release`` (its config overrides are keyed by the full name)."""
    return name.split("@", 1)[0]


def parse_list(text: str, what: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    if not items:
        raise ValueError(f"{what}: empty list")
    return items


def parse_checkpoints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(s) for s in parse_list(text, "--checkpoints"))
    except ValueError as exc:
        raise ValueError(f"--checkpoints {text!r}: expected integers separated by commas") from exc
    if any(v < 1 for v in values):
        raise ValueError(f"--checkpoints {text!r}: checkpoints must be >= 1")
    return values


def load_editor_overrides(path: str | None) -> dict[str, dict[str, Any]]:
    """``{editor name: {config key: value}}`` from a YAML/JSON file (or nothing)."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"editor config file not found: {file}")
    data = yaml.safe_load(file.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{file}: expected a mapping of editor names to mappings of config keys")
    return data


def load_cases(spec: BenchSpec) -> list[EditCase]:
    """The run's cases. With ``scope_examples`` N > 0 each edit request carries N ``also`` and
    N ``never`` examples: generated for the world's splits, read from the records of a file
    (a record without them is a ``DataError``)."""
    data = parse_data_spec(spec.data)
    n = spec.scope_examples
    if data.split is not None:
        path = _world_records(spec.model, data.split, spec.out / "data", n)
        return load_records("world", path, spec.images or path.parent, scope_examples=n)
    return load_records(data.fmt, data.location, spec.images, scope_examples=n)


def _world_records(model: str, split: str, directory: Path, scope_examples: int = 0) -> Path:
    """Write the edit benchmark ``split`` of the world ``model`` was trained on (the built-in
    model's world for ``builtin``) under ``directory``, with ``scope_examples`` examples of
    each kind per record; return the records file."""
    from editscope.world import builtin_path, load_world, write_edits

    model_dir = builtin_path() if model == "builtin" else Path(model)
    target = directory / f"world-{split}"
    return Path(write_edits(load_world(model_dir), split, target, scope_examples=scope_examples))


def resolve_preset(spec: BenchSpec) -> str | None:
    """The ScopeEdit preset of the run: ``--preset``, else ``builtin`` for the built-in model."""
    from editscope.config import preset_names

    if spec.preset is None and spec.model == "builtin" and BUILTIN_PRESET in preset_names():
        return BUILTIN_PRESET
    return spec.preset


def editor_configs(spec: BenchSpec) -> dict[str, Any]:
    """The config of every chosen editor: ScopeEdit/M-ORE from the preset, LoRA on the same
    sites, baselines from their presets for that model; then the file's overrides."""
    from editscope.config import ScopeEditConfig, load_preset
    from editscope.editors.registry import make_config
    from editscope.editors.baselines.presets import baseline_values
    from editscope.editors.scopememory import ScopeMemoryConfig, load_memory_preset, memory_preset_names

    preset = resolve_preset(spec)
    scope_cfg = load_preset(preset) if preset is not None else ScopeEditConfig()
    overrides = {**load_editor_overrides(spec.editor_config), **{k: dict(v) for k, v in spec.overrides.items()}}
    configs: dict[str, Any] = {}
    for name in spec.editors:
        kind = editor_kind(name)
        if kind in ("scopeedit", "more"):
            configs[name] = ScopeEditConfig.from_dict({**scope_cfg.to_dict(), **overrides.get(name, {})})
            continue
        if kind == "scopememory":
            base = load_memory_preset(preset) if preset in memory_preset_names() else ScopeMemoryConfig()
            configs[name] = ScopeMemoryConfig.from_dict({**base.to_dict(), **overrides.get(name, {})})
            continue
        values = dict(baseline_values(kind, preset))
        if kind == "lora":
            values.setdefault("n_last_layers", scope_cfg.n_last_layers)
            values.setdefault("include_projector", scope_cfg.include_projector)
        values.update(overrides.get(name, {}))
        configs[name] = make_config(kind, values)
    unused = sorted(set(overrides) - set(spec.editors))
    if unused:
        log.warning("editor config given for editors not in the run: %s", unused)
    return configs


def _stream_rows(stream: Sequence[EditCase]) -> list[dict[str, Any]]:
    """One row per edit; an edit with scope examples also lists their image file names (names:
    each run writes its own copy of the records) under ``also`` and ``never``."""
    rows = []
    for c in stream:
        row = {"case_id": c.case_id, "fact_id": c.fact_id, "round": c.round, "prompt": c.request.prompt,
               "target": c.target, "previous_target": c.previous_target,
               "image": None if c.request.image is None else str(c.request.image)}
        for name, examples in (("also", c.also), ("never", c.never)):
            if examples:
                row[name] = [Path(e.image).name if isinstance(e.image, (str, Path)) else "<image>" for e in examples]
        rows.append(row)
    return rows


def _config_record(spec: BenchSpec, configs: Mapping[str, Any], n_records: int, checkpoints: Sequence[int],
                   device: str) -> dict[str, Any]:
    from editscope.config import ScopeEditConfig

    def plain(cfg: Any) -> Any:
        return cfg.to_dict() if isinstance(cfg, ScopeEditConfig) else dataclasses.asdict(cfg)  # ScopeMemoryConfig too

    return {
        "model": spec.model, "data": spec.data, "images": spec.images, "editors": list(spec.editors),
        "edits": spec.edits, "facts": spec.facts, "checkpoints": list(checkpoints), "preset": resolve_preset(spec),
        "seed": spec.seed,
        "scope_threshold": spec.scope_threshold, "exact_match": spec.exact_match,
        "record_anchors": spec.record_anchors, "sibling_anchors": spec.sibling_anchors,
        "records": n_records, "reference": spec.reference, "scope_examples": spec.scope_examples,
        "editor_configs": {k: plain(v) for k, v in configs.items()}, "device": device,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "platform": platform.platform(),
    }


def run_bench(spec: BenchSpec, command: str, vlm: Any = None, progress: bool = True,
              echo: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Run the benchmark described by ``spec``; returns the results (also written to
    ``spec.out``). ``vlm`` overrides loading ``spec.model`` (tests)."""
    from editscope.editors.registry import build_editor, reference_size
    from editscope.editors.reference import load_reference

    torch.manual_seed(spec.seed)
    spec.out.mkdir(parents=True, exist_ok=True)
    cases = load_cases(spec)
    if spec.facts is not None:
        if spec.facts > len(cases):
            raise ValueError(f"--facts {spec.facts}: the data has only {len(cases)} records")
        cases = cases[: spec.facts]
    stream = build_stream(cases, spec.edits, seed=spec.seed)
    if len(cases) < spec.edits:
        echo(f"{len(cases)} records for {spec.edits} edits: later edits re-edit facts to new values")
    configs = editor_configs(spec)
    if vlm is None:
        from editscope.models import load

        vlm = load(spec.model, device=spec.device)
    device = str(vlm.device)
    protocol = ProtocolConfig(checkpoints=spec.checkpoints, scope_threshold=spec.scope_threshold,
                              exact_match=spec.exact_match, record_anchors=spec.record_anchors,
                              sibling_anchors=spec.sibling_anchors,
                              progress=progress)
    checkpoints = protocol.checkpoints_for(len(stream))
    config = _config_record(spec, configs, len(cases), checkpoints, device)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    finished: list[EditorRun] = []

    def write(runs: Sequence[EditorRun]) -> dict[str, Any]:
        results = build_results(runs, checkpoints, config, _stream_rows(stream), command, created)
        write_results(results, spec.out)
        write_summary(results, spec.out)
        return results

    def on_done(run: EditorRun) -> None:
        finished.append(run)
        write(finished)  # partial results survive an interrupted run
        echo(f"{run.name}: done ({len(run.edits)} edits)")

    # the reference sets of editors with a reference prior, built (and checked) before any runs
    sizes = {name: reference_size(c) for name, c in configs.items()}
    references = {size: load_reference(spec.reference, spec.model, size) for size in set(sizes.values()) if size}
    if spec.reference is not None and not references:
        echo(f"note: --reference {spec.reference} is unused: no editor in this run takes a reference set "
             "(a reference prior, ScopeEdit's prior section, or ScopeMemory's reference_size > 0)")

    def build(v: Any, name: str) -> Any:
        return build_editor(editor_kind(name), v, configs[name], reference=references.get(sizes[name]),
                            progress=progress)

    factories = {name: (lambda v, n=name: build(v, n)) for name in spec.editors}
    run_comparison(vlm, stream, factories, protocol, on_done=on_done)
    results = write(finished)
    write_plots(results, spec.out)
    return results


__all__ = ["BenchSpec", "DataError", "DEFAULT_EDITORS", "parse_checkpoints", "parse_list", "run_bench"]
