"""Sweep ScopeEdit hyper-parameters for the built-in model on world:dev (never on test).

Usage: python scripts/tune_builtin.py --edits 100 --out runs/tune 'eta=0.5' 'eta=1.0,top_k=2' ...
Each argument is one candidate: comma-separated key=value overrides of the builtin preset.
Prints one line per candidate with the retention metrics after the stream.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from editscope.evaluation.bench import BenchSpec, run_bench
from editscope.models import load

KEYS = ("rel", "t_gen", "m_gen", "text_transfer", "t_loc", "m_loc", "near_miss_leak", "proper_share")


def parse(candidate: str) -> dict:
    if not candidate:
        return {}
    return {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in candidate.split(","))}


def builtin_scopeedit(overrides: str = ""):
    """The builtin preset with ``overrides`` (``key=value,...``), the built-in model and a
    ScopeEdit on it with the reference prior folded, on one torch thread (for the study scripts)."""
    from editscope.config import load_preset
    from editscope.editors.reference import load_reference
    from editscope.editors.registry import build_editor

    torch.set_num_threads(1)
    config = load_preset("builtin").replace(**parse(overrides))
    vlm = load("builtin")
    reference = load_reference("world", "builtin", config.reference_size) if config.reference_weight > 0 else None
    return config, vlm, build_editor("scopeedit", vlm, config, reference=reference)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("candidates", nargs="*", default=[""])
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--editor", default="scopeedit")
    parser.add_argument("--out", type=Path, default=Path("runs/tune"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--facts", type=int, default=None, help="use only the first N dev records")
    parser.add_argument("--sibling-anchors", action="store_true", help="anchor on the records' sibling questions")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vlm = load(args.model)
    for i, candidate in enumerate(args.candidates):
        overrides = parse(candidate)
        spec = BenchSpec(
            model=args.model, data="world:dev", preset="builtin", out=args.out / f"c{i}", editors=(args.editor,),
            edits=args.edits, checkpoints=(args.edits,), facts=args.facts, exact_match=False,
            sibling_anchors=args.sibling_anchors,
            overrides={args.editor: overrides},
        )
        results = run_bench(spec, f"tune {candidate}", vlm=vlm, progress=False)
        entry = results["editors"][args.editor]
        ret = entry["retention"][str(args.edits)]
        onl = entry["online"][str(args.edits)]
        row = {"candidate": candidate or "(preset)", **{f"ret_{k}": ret.get(k) for k in KEYS},
               "onl_rel": onl.get("rel"), "onl_t_gen": onl.get("t_gen"), "onl_m_gen": onl.get("m_gen"),
               "onl_text": onl.get("text_transfer"), "onl_leak": onl.get("near_miss_leak"),
               "time": entry["cost"]["edit_time_median_s"],
               "steps": sum(e["steps"] for e in entry["edits"]) / max(len(entry["edits"]), 1)}
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
