"""Where ScopeMemory's router sends each kind of probe after a stream of edits (issue 19).

Builds ScopeMemory on the model, applies the edits of a world split's bench stream in order
(``build_stream(cases, edits, seed)``, the stream the bench runs), then, for the latest edit of
every fact (the retention view), routes each of its probes (``ScopeMemory.route_of``) and counts
the share routed to the fact's own slot (split into: its local write applies, or only its shared
write), to another fact's slot, or to no slot. In-scope kinds (edit, rephrase, other render,
text-only) should go to their own slot; out-of-scope kinds (look-alike, other fact, unrelated
text and image) to none.

RESULTS, when given, is a bench results.json: its split, edits, seed, anchors and ScopeMemory
config are used (the flags otherwise). Without it each edit is ``case.request`` alone (no anchors;
``--record-anchors`` passes the record's locality pair as anchors, as the bench does by default).

    python scripts/router_report.py --split dev --edits 200 --json runs/router_dev200.json
    python scripts/router_report.py runs/sm/results.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from editscope.editors.registry import build_editor
import editscope
from editscope.editors.base import EditRejected
from editscope.editors.reference import load_reference
from editscope.editors.scopememory import ScopeMemoryConfig, load_memory_preset
from editscope.editors.scopememory.router import NO_SLOT
from editscope.evaluation.data import load_records
from editscope.evaluation.stream import build_stream, latest_per_fact
from editscope.evaluation.protocol import ProtocolConfig, anchored_request
from editscope.world import builtin_path, load_world, write_edits

KINDS = (
    ("edit", "edit input"),
    ("rephrase", "rephrase"),
    ("image_rephrase", "other render"),
    ("text_transfer", "text-only"),
    ("near_miss", "look-alike"),
    ("other_fact", "other fact"),
    ("loc", "unrelated text"),
    ("m_loc", "unrelated image"),
)
CLASSES = ("own_local", "own_shared", "other", "none")


def probes_of(case, kind: str) -> list:
    """(image, prompt) of every probe of ``kind`` in ``case``."""
    if kind == "edit":
        return [(case.request.image, case.request.prompt)]
    value = getattr(case, kind)
    items = value if isinstance(value, tuple) else (() if value is None else (value,))
    return [(p.image, p.prompt) for p in items]


def load_model(model: str):
    if model == "builtin":
        return editscope.load("builtin")
    if model == "tiny":  # the ``cost`` tiny LLaVA of benchmarks.tiny
        from editscope.benchmarks.tiny import build_tiny_llava

        return editscope.load(*build_tiny_llava(seed=0))
    raise ValueError(f"unknown --model {model!r} (builtin or tiny)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", nargs="?", help="a bench results.json whose stream and config to follow")
    parser.add_argument("--model", default="builtin", choices=("builtin", "tiny"))
    parser.add_argument("--split", default="test", help="world split (dev, test, ...)")
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", help="ScopeMemory preset (default: the model's)")
    parser.add_argument("--editor-config", help="a ScopeMemoryConfig YAML file (overrides --preset)")
    parser.add_argument("--record-anchors", action="store_true",
                        help="pass each record's locality pair (loc, m_loc) as the edit's anchors")
    parser.add_argument("--scope-examples", type=int, default=0,
                        help="also/never examples per edit, as bench --scope-examples (RESULTS sets it)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the counts and every probe's route here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    split, edits, seed, examples = args.split, args.edits, args.seed, args.scope_examples
    protocol = ProtocolConfig(record_anchors=args.record_anchors, sibling_anchors=False, progress=False)
    cfg = ScopeMemoryConfig.from_file(args.editor_config) if args.editor_config else \
        load_memory_preset(args.preset or args.model)
    if args.results:
        config = json.loads(Path(args.results).read_text())["config"]
        data = str(config["data"])
        if not data.startswith("world:"):
            raise SystemExit(f"{args.results}: data {data!r} is not a world split")
        split, edits, seed = data.split(":", 1)[1], int(config["edits"]), int(config["seed"])
        examples = int(config.get("scope_examples") or 0)
        protocol = ProtocolConfig(record_anchors=bool(config.get("record_anchors", True)),
                                  sibling_anchors=bool(config.get("sibling_anchors", False)), progress=False)
        if "scopememory" in config.get("editor_configs", {}):
            cfg = ScopeMemoryConfig.from_dict(config["editor_configs"]["scopememory"])
    torch.manual_seed(seed)

    vlm = load_model(args.model)
    reference = load_reference("world", "builtin", cfg.reference_size) if cfg.reference_size else None
    editor = build_editor("scopememory", vlm, cfg, reference=reference)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_edits(load_world(builtin_path()), split, Path(tmp), scope_examples=examples)
        cases = load_records("world", path, path.parent, scope_examples=examples)
        stream = build_stream(cases, edits, seed=seed)
        rejected = 0
        for case in stream:
            try:
                editor.edit(anchored_request(case, protocol))
            except EditRejected:
                rejected += 1
        edit_time = time.perf_counter() - start

        facts = editor.memory.slots["fact"]
        active = editor.memory.slots["active"]
        counts = {kind: Counter() for kind, _ in KINDS}
        routes = []
        for case in latest_per_fact(stream):
            key = torch.tensor(list(editor.fact_of(case.request)), dtype=torch.uint8, device=facts.device)
            hit = ((facts == key).all(-1) & active).nonzero().flatten()
            own = int(hit[0]) if hit.numel() else None
            for kind, _ in KINDS:
                for image, prompt in probes_of(case, kind):
                    slot, local, shared = editor.route_of(image, prompt)
                    if slot == NO_SLOT:
                        where = "none"
                    elif slot == own:
                        where = "own_local" if local else "own_shared"
                    else:
                        where = "other"
                    counts[kind][where] += 1
                    routes.append({"fact_id": case.fact_id, "case_id": case.case_id, "kind": kind,
                                   "prompt": prompt, "own_slot": own, "slot": slot, "local": local,
                                   "shared": shared, "class": where})
    report_time = time.perf_counter() - start - edit_time

    latest = latest_per_fact(stream)
    anchors = "record anchors (loc, m_loc)" if protocol.record_anchors else "no anchors"
    print(f"world:{split}, {len(stream)} edits (seed {seed}, {anchors}), {len(latest)} facts, "
          f"{editor.size} slots, {rejected} rejected; edits {edit_time:.0f} s, routing {report_time:.0f} s")
    print(f"{'probe kind':<16} {'n':>5} | {'own':>6} {'local':>6} {'shared':>6} | {'other':>6} {'none':>6}")
    table = {}
    for kind, label in KINDS:
        c = counts[kind]
        n = sum(c.values())
        share = {k: (c[k] / n if n else None) for k in CLASSES}
        table[kind] = {"label": label, "n": n, "counts": {k: c[k] for k in CLASSES},
                       "own": (c["own_local"] + c["own_shared"]) / n if n else None, **share}

        def f(x):
            return f"{x:6.3f}" if x is not None else f"{'-':>6}"

        print(f"{label:<16} {n:>5} | {f(table[kind]['own'])} {f(share['own_local'])} {f(share['own_shared'])} | "
              f"{f(share['other'])} {f(share['none'])}")
    print("own = routed to the fact's own slot (local: its local write applies; shared: only its shared write); "
          "other = another fact's slot; none = no slot")
    if args.json:
        out = {"model": args.model, "split": split, "edits": len(stream), "seed": seed,
               "record_anchors": protocol.record_anchors, "sibling_anchors": protocol.sibling_anchors,
               "facts": len(latest), "slots": editor.size, "rejected": rejected,
               "edit_time_s": edit_time, "config": cfg.to_dict(), "kinds": table, "routes": routes}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
