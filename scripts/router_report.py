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

It also prints, for the in-scope probes (edit, rephrase, other render, text-only) that miss their
own slot, the first of that slot's rules each one fails (``REASONS``): whether the question or the
image fell below the floor every slot starts from, or below a threshold that calibration raised.
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
IN_SCOPE = ("edit", "rephrase", "image_rephrase", "text_transfer")
REASONS = (  # why an in-scope probe missed its own slot: the first of the slot's rules it fails
    ("question floor", "question key below text_threshold, the floor every slot starts from "
                       "(text-only: below text_only_threshold)"),
    ("question raised", "question key at or above the floor, below the slot's calibrated tau_text"),
    ("shared off", "the slot's shared write may not fire (an instance edit)"),
    ("image floor", "nearest positive image below subject_threshold, the floor every slot starts from"),
    ("image raised", "nearest positive at or above the floor, below the slot's calibrated tau_image"),
    ("never", "not margin nearer its nearest positive than its nearest never example"),
    ("lead", "another slot's image more than subject_lead nearer"),
    ("outscored", "the own slot passes; another slot passes with a higher score"),
)


def miss_reason(editor, image, prompt, own: int) -> dict:
    """Why an in-scope probe did not route to its own slot ``own``: its similarities to that slot
    and the first rule it fails (see ``REASONS``)."""
    from editscope.editors.scopememory.router import similarities

    memory, limits = editor.memory, editor.memory.limits
    q, v, has = editor._keys(editor.vlm.encode(image, prompt, None))
    view = memory.view()
    s = similarities(q, v, has, view)
    text, near, never = float(s.text[0, own]), float(s.near[0, own]), float(s.never[0, own])
    tau_text, tau_image = float(view.tau_text[own]), float(view.tau_image[own])
    rival = float(torch.where(s.pair[0] & view.active, s.near[0], torch.full_like(s.near[0], -2.0)).max())
    row = {"text": text, "tau_text": tau_text, "near": near, "tau_image": tau_image, "never": never, "rival": rival}
    floor = editor.config.text_threshold
    if not bool(has[0]):
        floor = max(floor, limits.text_only)
        tau_text = max(tau_text, limits.text_only)
    if text < tau_text:
        reason = "question floor" if text < floor else "question raised"
    elif not bool(has[0]):
        reason = "shared off" if not bool(view.shared[own]) else "outscored"
    elif near >= limits.instance:
        reason = "outscored"
    elif not bool(view.shared[own]):
        reason = "shared off"
    elif near < editor.config.subject_threshold:
        reason = "image floor"
    elif near < tau_image:
        reason = "image raised"
    elif near < never + limits.margin:
        reason = "never"
    elif near < rival - limits.lead:
        reason = "lead"
    else:
        reason = "outscored"
    return {**row, "reason": reason}


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
        reasons = {kind: Counter() for kind in IN_SCOPE}
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
                    route = {"fact_id": case.fact_id, "case_id": case.case_id, "kind": kind,
                             "prompt": prompt, "own_slot": own, "slot": slot, "local": local,
                             "shared": shared, "class": where}
                    if kind in IN_SCOPE and own is not None and where in ("other", "none"):
                        route["miss"] = miss_reason(editor, image, prompt, own)
                        reasons[kind][route["miss"]["reason"]] += 1
                    routes.append(route)
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
    print("\nin-scope probes that missed their own slot, by the first rule of that slot they fail:")
    print(f"{'probe kind':<16} " + " ".join(f"{name:>12}" for name, _ in REASONS))
    for kind in IN_SCOPE:
        label = dict(KINDS)[kind]
        print(f"{label:<16} " + " ".join(f"{reasons[kind][name]:>12}" for name, _ in REASONS))
    for name, meaning in REASONS:
        print(f"  {name}: {meaning}")
    for name, key, cos, floor in (("question raised", "tau_text", "text", cfg.text_threshold),
                                  ("image raised", "tau_image", "near", cfg.subject_threshold)):
        raised = [r["miss"] for r in routes if r.get("miss", {}).get("reason") == name]
        if raised:
            gap = sorted(m[key] - m[cos] for m in raised)
            lift = sorted(m[key] - floor for m in raised)
            print(f"{name} ({len(raised)}): median threshold - cosine {gap[len(gap) // 2]:.3f}, "
                  f"median threshold - floor {lift[len(lift) // 2]:.3f}")
    if args.json:
        out = {"reasons": {kind: dict(reasons[kind]) for kind in IN_SCOPE}, "model": args.model, "split": split, "edits": len(stream), "seed": seed,
               "record_anchors": protocol.record_anchors, "sibling_anchors": protocol.sibling_anchors,
               "facts": len(latest), "slots": editor.size, "rejected": rejected,
               "edit_time_s": edit_time, "config": cfg.to_dict(), "kinds": table, "routes": routes}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
