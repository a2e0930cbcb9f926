"""``editscope demo``: the built-in model, 50 test edits with one editor (``--editor``:
ScopeEdit by default, or any editor of ``editscope.editors.registry``, e.g. ``scopememory``),
a table, a JSON report and a plot."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

DEMO_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rel", "Rel"),
    ("t_gen", "T-Gen"),
    ("m_gen", "M-Gen"),
    ("text_transfer", "text-only"),
    ("t_loc", "T-Loc"),
    ("m_loc", "M-Loc"),
    ("near_miss_leak", "near-miss leak"),
    ("exact_match", "exact match"),
)


def _cell(value: Any) -> str:
    return "  n/a" if value is None else f"{value:5.3f}"


def demo_table(results: dict[str, Any], editor: str, edits: int) -> str:
    """A plain-text table: online (each edit right after it) and retention (all edits at the end)."""
    entry = results["editors"][editor]
    header = f"{'':24s}" + "".join(f"{title:>15s}" for _, title in DEMO_COLUMNS)
    lines = [header]
    for block, label in (("online", f"online ({edits} edits)"), ("retention", f"retention after {edits}")):
        metrics = entry[block][str(edits)]
        lines.append(f"{label:24s}" + "".join(f"{_cell(metrics.get(key)):>15s}" for key, _ in DEMO_COLUMNS))
    return "\n".join(lines)


def run_demo(out: Path, edits: int, editor: str, echo) -> dict[str, Any]:
    from editscope.evaluation.bench import BenchSpec, run_bench

    checkpoints = tuple(sorted({1, min(10, edits), edits}))
    spec = BenchSpec(
        model="builtin", data="world:test", out=out, editors=(editor,), edits=edits, checkpoints=checkpoints
    )
    start = time.perf_counter()
    results = run_bench(spec, f"editscope demo --editor {editor} --edits {edits} --out {out}", progress=True,
                        echo=echo)
    echo("")
    echo(demo_table(results, editor, edits))
    echo("")
    echo(f"{edits} edits in {time.perf_counter() - start:.0f} s; report: {out / 'results.json'}, "
         f"{out / 'summary.md'}; plots: {', '.join(str(p) for p in sorted(out.glob('*.png')))}")
    return results
