"""What ScopeMemory's routing costs a forward pass as slots accumulate (issue 19): one
teacher-forced forward of a world edit input on the unedited model, and on the model with a
ScopeMemory holding N synthetic slots (random unit keys, floor thresholds, random small writes;
see ``editors/scopememory/synthetic.py``), for an input that matches no slot and for one routed
to a slot (the first synthetic slot carries that input's own keys). All configurations are timed
in one run, interleaved in a seeded random order per repetition; medians are reported, with the
ratio to the unedited forward of the same input (the ratio of medians, and the median of the
per-repetition ratios). The issue's bars: at most 1.05x at 1,000 slots and 1.20x at 10,000.

The unedited model is a second copy of the same weights (no editor installed); "0" is the editor
installed with no slot. An input that matches no slot must give the unedited logits exactly.

    python scripts/routing_cost.py --threads 1 --json runs/routing_cost.json --plot runs/routing_cost.png
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from editscope.editors.registry import build_editor
import editscope
from editscope.editors.reference import load_reference
from editscope.editors.scopememory import load_memory_preset
from editscope.editors.scopememory.router import NO_SLOT, build_scan
from editscope.editors.scopememory.synthetic import fill_synthetic
from editscope.evaluation.data import load_records
from editscope.world import builtin_path, load_world, write_edits

BARS = {1000: 1.05, 10000: 1.20}


def build(model: str):
    """Two copies of the model (the one the editor goes on, and the unedited one) and the
    editor's config and reference set."""
    if model == "builtin":
        cfg = load_memory_preset("builtin")
        return (editscope.load("builtin"), editscope.load("builtin"), cfg,
                load_reference("world", "builtin", cfg.reference_size))
    if model == "tiny":  # the ``cost`` tiny LLaVA of benchmarks.tiny, no reference set
        from editscope.benchmarks.tiny import build_tiny_llava

        copies = [editscope.load(*build_tiny_llava(seed=0)) for _ in range(2)]
        return copies[0], copies[1], load_memory_preset("tiny"), None
    raise ValueError(f"unknown --model {model!r} (builtin or tiny)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="builtin", choices=("builtin", "tiny"))
    parser.add_argument("--slots", default="1,100,1000,10000", help="comma-separated slot counts")
    parser.add_argument("--repeats", type=int, default=100, help="timed forwards per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds over all configurations first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--split", default="test", help="world split whose edit inputs are timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--plot", help="draw the ratios against the number of slots into this PNG")
    args = parser.parse_args()
    counts = sorted({int(s) for s in args.slots.split(",") if s.strip()})
    if not counts or counts[0] < 1:
        parser.error("--slots takes positive slot counts")
    torch.set_num_threads(args.threads)

    vlm, base, cfg, reference = build(args.model)
    editor = build_editor("scopememory", vlm, cfg, reference=reference)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_edits(load_world(builtin_path()), args.split, Path(tmp))
        cases = load_records("world", path, path.parent)
        encoded = [vlm.encode(c.request.image, c.request.prompt, c.request.target) for c in cases[:50]]
    routed_input = encoded[0]
    fill_synthetic(editor, counts[-1], seed=args.seed, match=editor._keys(routed_input))
    slots = editor.memory.slots
    # a slot count N keeps the first N slots and the example rows they own (appended in slot order)
    owners = {kind: table["owner"].clone() for kind, table in editor.memory.examples.items()}

    def keep_slots(n: int) -> None:
        slots.n = n
        for kind, table in editor.memory.examples.items():
            table.n = int((owners[kind] < n).sum())

    def route(inputs) -> int:
        with torch.no_grad():
            vlm.forward(inputs)
        return int(editor.memory.last_route.slot[0])

    no_match_input = next((i for i in encoded[1:] if route(i) == NO_SLOT), None)
    if no_match_input is None:
        raise SystemExit("every edit input routes to a slot: no input to time the no-match case on")
    inputs = {"no match": no_match_input, "routed": routed_input}

    # checks and sizes, outside the timing
    with torch.no_grad():
        base_logits = {k: base.forward(i) for k, i in inputs.items()}
    rows = []
    for n in [0, *counts]:
        keep_slots(n)
        row: dict = {"slots": n, "state_bytes": editor.state_bytes()}
        if n:
            with torch.no_grad():
                row["no_match_exact"] = bool(torch.equal(vlm.forward(inputs["no match"]), base_logits["no match"]))
            row["routed_slot"] = route(inputs["routed"])
            row["no_match_slot"] = route(inputs["no match"])
            if row["routed_slot"] != 0 or row["no_match_slot"] != NO_SLOT:
                raise SystemExit(f"at {n} slots the routes are not as planted: {row}")
        rows.append(row)

    configs = [(None, kind) for kind in inputs] + [(n, kind) for n in [0, *counts] for kind in inputs]
    times: dict = {c: [] for c in configs}
    order = random.Random(args.seed)
    gc.collect()
    gc.disable()
    try:
        with torch.no_grad():
            for repeat in range(args.warmup + args.repeats):
                shuffled = list(configs)
                order.shuffle(shuffled)
                for n, kind in shuffled:
                    model = base if n is None else vlm
                    if n is not None:
                        keep_slots(n)
                    start = time.perf_counter()
                    model.forward(inputs[kind])
                    elapsed = time.perf_counter() - start
                    if repeat >= args.warmup:
                        times[(n, kind)].append(elapsed)
    finally:
        gc.enable()
        keep_slots(counts[-1])

    def figures(n, kind) -> dict:
        mine, ref = times[(n, kind)], times[(None, kind)]
        return {"ms": 1e3 * statistics.median(mine), "ratio": statistics.median(mine) / statistics.median(ref),
                "paired_ratio": statistics.median(a / b for a, b in zip(mine, ref))}

    unedited = {kind: 1e3 * statistics.median(times[(None, kind)]) for kind in inputs}
    for row in rows:
        row["no_match"], row["routed"] = figures(row["slots"], "no match"), figures(row["slots"], "routed")

    lengths = {k: i.length for k, i in inputs.items()}
    print(f"model {args.model}, {args.threads} thread(s), {args.repeats} repeats (+{args.warmup} warm-up), "
          f"medians; input lengths: no match {lengths['no match']}, routed {lengths['routed']} tokens")
    print(f"bytes per slot: {editor.bytes_per_slot()} ({editor.bytes_per_slot() / 1024:.1f} KiB)")
    print(f"{'slots':>8} {'state MiB':>10} | {'no match ms':>11} {'ratio':>6} {'paired':>6} | "
          f"{'routed ms':>9} {'ratio':>6} {'paired':>6}")
    print(f"{'unedited':>8} {'-':>10} | {unedited['no match']:11.2f} {'1.000':>6} {'':>6} | "
          f"{unedited['routed']:9.2f} {'1.000':>6} {'':>6}")
    for row in rows:
        a, b = row["no_match"], row["routed"]
        print(f"{row['slots']:>8} {row['state_bytes'] / 2**20:10.2f} | {a['ms']:11.2f} {a['ratio']:6.3f} "
              f"{a['paired_ratio']:6.3f} | {b['ms']:9.2f} {b['ratio']:6.3f} {b['paired_ratio']:6.3f}")
    keep_slots(counts[-1])
    scan, scan_figures = editor.memory.scan(), None
    if scan is not None:  # the half-precision copies the router scans, renewed after each edit
        builds = []
        for _ in range(5):
            start = time.perf_counter()
            build_scan(editor.memory.view())
            builds.append(time.perf_counter() - start)
        scan_bytes = sum(t.numel() * t.element_size() for t in (scan.text, scan.positive, scan.positive_owner))
        print(f"half-precision scan at {counts[-1]} slots: {scan_bytes / 2**20:.2f} MiB in memory (not in the "
              f"state), built in {1e3 * statistics.median(builds):.1f} ms after each edit")
        scan_figures = {"slots": counts[-1], "bytes": scan_bytes, "build_ms": 1e3 * statistics.median(builds)}
    exact = all(r.get("no_match_exact", True) for r in rows)
    print(f"no-match input gives the unedited logits exactly at every N: {exact}")
    for n, bar in BARS.items():
        row = next((r for r in rows if r["slots"] == n), None)
        if row is not None:
            worst = max(row["no_match"]["ratio"], row["routed"]["ratio"])
            print(f"bar at {n} slots: <= {bar:.2f}x; worst ratio {worst:.3f}x: {'met' if worst <= bar else 'NOT met'}")
    if args.json:
        out = {"model": args.model, "threads": args.threads, "repeats": args.repeats, "warmup": args.warmup,
               "split": args.split, "bytes_per_slot": editor.bytes_per_slot(), "input_lengths": lengths,
               "unedited_ms": unedited, "no_match_exact": exact, "rows": rows, "scan": scan_figures,
               "bars": {str(n): bar for n, bar in BARS.items()}}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot, f"model {args.model}, {args.threads} thread(s)")


def plot(rows: list[dict], path: str, title: str) -> None:
    """The ratio to the unedited forward against the number of slots, both inputs, with the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counted = [r for r in rows if r["slots"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, label in (("no_match", "input matching no slot"), ("routed", "input routed to a slot")):
        ax.plot([r["slots"] for r in counted], [r[kind]["ratio"] for r in counted], marker="o", label=label)
    for n, bar in BARS.items():
        ax.plot([n], [bar], marker="_", markersize=24, color="red", linestyle="none")
    ax.plot([], [], marker="_", color="red", linestyle="none", label="bar")
    ax.set_xscale("log")
    ax.set_xlabel("slots")
    ax.set_ylabel("forward time / unedited forward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
