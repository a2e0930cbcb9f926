"""Which M-Loc probes of a world split show a near neighbour of an edited subject, and does the
neighbour's slot take them when it is edited alone?

A record's M-Loc probe shows a locality subject with a question about one of its facts. The
world draws locality subjects at random, so some differ from an edited subject of the split in
only one look attribute (shape, colour, pattern or background) and are asked about the fact that
subject is edited on: an uncontrolled look-alike of another edit. This script lists them, then,
for each config, edits every such neighbour's record alone on the unedited model (with the
bench's record anchors) and reports, per confounded probe, its route and whether its answer
changed (teacher-forced top-1 on the answer tokens, as M-Loc counts it).

    python scripts/mloc_neighbours.py --split test '{}'
    python scripts/mloc_neighbours.py --split test --results docs/results/world-test-1000/merged/results.json
    python scripts/mloc_neighbours.py --split test --cosines '{"view_margin": 0}'

``--results`` marks which confounded probes failed M-Loc after the stream of a bench run (its
retention rows at the last checkpoint), to set beside the edited-alone outcome.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

import editscope
from editscope.editors.reference import load_reference
from editscope.editors.registry import build_editor
from editscope.editors.scopememory import load_memory_preset
from editscope.evaluation import metrics as M
from editscope.evaluation.data import load_records
from editscope.evaluation.protocol import ProtocolConfig, anchored_request
from editscope.world import builtin_path, load_world, write_edits
from editscope.world.edits import make_records
from editscope.world.templates import fact_templates
from editscope.world.world import FACTS


def fact_asked(world_question: str) -> str:
    """The fact a world question asks about (by its template's opening words)."""
    for fact in FACTS:
        for split in ("train", "heldout"):
            for template in fact_templates(fact, split):
                head = str(template).split("{")[0][:12]
                if head and world_question.startswith(head):
                    return fact
    raise ValueError(f"no fact template matches {world_question!r}")


def confounded(world, records: list[dict]) -> list[tuple[int, list[int]]]:
    """(record index, indices of the records whose subject is within one look attribute of its
    M-Loc subject and edited on the fact its M-Loc question asks)."""
    by_subject = {r["subject"]: i for i, r in enumerate(records)}
    out = []
    for i, r in enumerate(records):
        look = world.by_name(r["m_loc_subject"]).look
        fact = fact_asked(r["m_loc_q"])
        near = [j for name, j in by_subject.items()
                if records[j]["fact"] == fact
                and sum(look[k] != world.by_name(name).look[k] for k in look) <= 1]
        if near:
            out.append((i, near))
    return out


def answer_top1(vlm, probe) -> torch.Tensor:
    inputs = vlm.encode(probe.image, probe.prompt, probe.answer)
    with torch.no_grad():
        logits = vlm.forward(inputs)[0]
    return M.probe_outputs(logits, inputs.target_positions).answer_top1


def cosines(editor, vlm, probe, i: int, j: int) -> str:
    """The probe's keys against slot 0 (the only one): question and tau_text, edit image and
    tau_image, and the views."""
    view = editor.memory.view()
    q, v, _ = editor._keys(vlm.encode(probe.image, probe.prompt, None))
    views = sorted((v[0] @ view.examples.also.T).tolist(), reverse=True) if view.examples is not None else []
    return (f"  record {i} in slot of {j}: question {float(q[0] @ view.text[0]):.3f}, tau_text "
            f"{float(view.tau_text[0]):.3f}; edit image {float(v[0] @ view.image[0]):.3f}, tau_image "
            f"{float(view.tau_image[0]):.3f}; views " + " ".join(f"{c:.3f}" for c in views))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", default=["{}"], help="JSON overrides of the builtin preset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--results", help="a bench results.json on the same split: its M-Loc misses")
    parser.add_argument("--editor", default="scopememory", help="the run in --results to read")
    parser.add_argument("--cosines", action="store_true",
                        help="for each probe a slot takes, print its keys' cosines to the slot's question and "
                             "edit image, the slot's thresholds and its cosines to the slot's views")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = load_world(builtin_path())
    records = make_records(world, args.split)
    pairs = confounded(world, records)
    failed: set[int] | None = None
    if args.results:
        run = json.loads(Path(args.results).read_text())
        editor_run = run["editors"][args.editor]
        last = max(editor_run["retention_rows"], key=int)
        failed = {int(row["fact_id"].rsplit("-", 1)[1]) for row in editor_run["retention_rows"][last]
                  if row["m_loc"] is not None and row["m_loc"] < 1.0}
        others = len(failed - {i for i, _ in pairs})
        print(f"{args.results}: {len(failed)} M-Loc misses after {last} edits, "
              f"{len(failed) - others} on confounded probes, {others} on the others")
    print(f"{args.split}: {len(pairs)} of {len(records)} M-Loc probes show a one-attribute neighbour of "
          f"a subject edited on the fact they ask")
    vlm = editscope.load("builtin")
    path = write_edits(world, args.split, Path(tempfile.mkdtemp()) / args.split)
    cases = load_records("world", path, path.parent)
    base = {i: answer_top1(vlm, cases[i].m_loc) for i, _ in pairs}
    protocol = ProtocolConfig()
    for text in args.configs:
        config = replace(load_memory_preset("builtin"), **json.loads(text))
        reference = load_reference("world", "builtin", config.reference_size)
        routed = changed = 0
        for i, near in pairs:
            outcomes = []
            for j in near:
                editor = build_editor("scopememory", vlm, config, reference=reference)
                editor.edit(anchored_request(cases[j], protocol))
                probe = cases[i].m_loc
                slot, local, shared = editor.route_of(probe.image, probe.prompt)
                moved = not torch.equal(answer_top1(vlm, probe), base[i])
                if args.cosines and slot >= 0:
                    print(cosines(editor, vlm, probe, i, j), flush=True)
                outcomes.append((j, slot, shared, moved))
                editor.remove()
            routed += any(slot >= 0 for _, slot, _, _ in outcomes)
            changed += any(moved for *_, moved in outcomes)
            mark = "" if failed is None else (" stream: FAILED" if i in failed else " stream: held")
            print(f"{text} record {i} ({records[i]['m_loc_subject']}): "
                  + ", ".join(f"{records[j]['subject']} ({j}) slot {s} shared {sh} changed {m}"
                              for j, s, sh, m in outcomes) + mark, flush=True)
        print(f"{text}: edited alone, {routed} of {len(pairs)} confounded probes route to the neighbour's "
              f"slot, {changed} change their answer")


if __name__ == "__main__":
    main()
