"""Each edit alone: apply one world:dev edit to the built-in model, score it, reset, next.

Separates what one edit does (absorption, transfer, collateral change) from what a stream of
edits does (tune_builtin.py). Never run on world:test.

Usage: python scripts/single_edit_study.py --edits 30 '{}' '{"editor": "more"}' '{"eta": 0.2}'
(``--unedited`` first prints the unedited model's scores, ``--misses`` each record a candidate
misses a locality metric on.)
Each argument is one candidate: a JSON object of overrides of the builtin preset, with an
optional "editor" key (scopeedit, the default, more, or scopememory: then the overrides apply to
ScopeMemory's builtin preset). Prints one line per candidate with the
mean of each metric over the edits (and, for ScopeEdit, the gate's mean cos and g over the
shared layers, with the smallest g, and shared_share: the shared branch's share of the norm of
what the edit wrote, |B_g| over |B_l| + |B_g| summed over the sites), and margin: on the edit
itself after the edit, the smallest over its target tokens of the target's logit minus the
largest other logit (how far later writes must push before the edit is lost).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
from pathlib import Path

import torch

from editscope.config import load_preset
from editscope.editors.reference import load_reference
from editscope.editors.registry import build_editor
from editscope.editors.scopememory import load_memory_preset
from editscope.evaluation.data import load_records
from editscope.evaluation.protocol import CaseScorer, ProtocolConfig, anchored_request, compute_references
from editscope.models import load
from editscope.world import builtin_path, load_world, write_edits

LOCALITY = ("t_loc", "m_loc", "other_fact_loc", "near_miss_leak")
KEYS = ("rel", "t_gen", "m_gen", "text_transfer", "t_loc", "m_loc", "other_fact_loc", "near_miss_leak")


def margin(vlm, request) -> float:
    """min over the target tokens of (target logit - largest other logit), teacher-forced."""
    inputs = vlm.encode(request.image, request.prompt, request.target)
    with torch.no_grad():
        logits = vlm.forward(inputs)[0].float()[inputs.target_positions.long()]
    target = inputs.target_ids.long().to(logits.device)
    own = logits.gather(1, target[:, None])[:, 0]
    others = logits.scatter(1, target[:, None], float("-inf")).max(1).values
    return float((own - others).min())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("candidates", nargs="*", default=["{}"])
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--unedited", action="store_true",
                        help="first print the unedited model's scores on the same probes (no edit)")
    parser.add_argument("--misses", action="store_true",
                        help="also print, per candidate, each record that misses a locality metric or leaks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vlm = load("builtin")
    with tempfile.TemporaryDirectory() as tmp:
        records = write_edits(load_world(builtin_path()), "dev", Path(tmp))
        cases = load_records("world", Path(records), Path(records).parent)[: args.edits]
        refs = compute_references(vlm, cases, progress=False)
        protocol = ProtocolConfig(exact_match=False, progress=False)
        if args.unedited:  # an empty ScopeMemory gives the unedited logits exactly
            config = load_memory_preset("builtin")
            editor = build_editor("scopememory", vlm, config, reference=load_reference("world", "builtin", config.reference_size))
            rows = [CaseScorer(editor, refs, protocol).score(case) for case in cases]
            editor.remove()
            means = {k: round(statistics.mean(r[k] for r in rows if r.get(k) is not None), 3) for k in KEYS}
            print(json.dumps({"candidate": "unedited", **means}), flush=True)
        for candidate in args.candidates:
            overrides = json.loads(candidate)
            name = overrides.pop("editor", "scopeedit")
            if name == "scopememory":
                config = dataclasses.replace(load_memory_preset("builtin"), **overrides)
                reference = load_reference("world", "builtin", config.reference_size)
                editor = build_editor("scopememory", vlm, config, reference=reference)  # reset() keeps the router's centring
            else:
                config = dataclasses.replace(load_preset("builtin"), **overrides)
                reference = load_reference("world", "builtin", config.reference_size) if config.reference_weight > 0 else None
                editor = build_editor(name, vlm, config, reference=reference)  # reset() after each edit keeps the prior
            scorer = CaseScorer(editor, refs, protocol)
            rows, gates, shares, margins = [], [], [], []
            for case in cases:
                result = editor.edit(anchored_request(case, protocol))
                gates.extend(result.gates.values())
                rows.append(scorer.score(case))
                margins.append(margin(vlm, case.request))
                # what each branch wrote (the bases have orthonormal rows: |B A| = |B|)
                sites = editor.memory.sites if name == "scopememory" else editor.sites
                local = sum(float(site.B_local.norm()) for site in sites.values())
                shared = sum(float(site.B_shared.norm()) for site in sites.values())
                shares.append(shared / (local + shared) if local + shared > 0 else 0.0)
                editor.reset()
            editor.remove()
            means = {k: round(statistics.mean(r[k] for r in rows if r.get(k) is not None), 3) for k in KEYS}
            means["margin"] = round(statistics.mean(margins), 3)
            if gates:  # ScopeEdit: the evidence gate of the shared layers at each edit's last step
                means["gate_cos"] = round(statistics.mean(g.cos for g in gates), 3)
                means["gate_g"] = round(statistics.mean(g.g for g in gates), 3)
                means["gate_g_min"] = round(min(g.g for g in gates), 3)
                means["shared_share"] = round(statistics.mean(shares), 3)
            print(json.dumps({"candidate": candidate, **means}), flush=True)
            if args.misses:
                for case, row in zip(cases, rows):
                    missed = {k: round(row[k], 3) for k in LOCALITY if row.get(k) is not None
                              and (row[k] > 0 if k == "near_miss_leak" else row[k] < 1)}
                    if missed:
                        print(json.dumps({"record": case.fact_id, **missed}), flush=True)


if __name__ == "__main__":
    main()
