"""Does the unedited model's own answer tell a one-attribute neighbour from the edited subject?

    python scripts/answer_agreement.py [--split dev]

For each record of the split, the unedited built-in model answers the edit's question on the edit
image. Then, with the edit's question and its rephrase, it answers on the subject's held-out
renders 1 and 3 (*own*), on the look-alike's edit render, and on held-out render 2 of every
subject of the split or the locality split one look attribute away from the edited one, other
than its look-alike (*neighbour*, as ``scripts/neighbour_route.py``). Prints, per kind, the share
whose answer equals the answer on the edit image: a routing rule "the unedited answer agrees" would
keep that share of each kind. It also edits each record alone with the ``builtin`` preset (record
anchors, as the bench) and splits each kind by whether the probe reaches the slot's shared write
(``ScopeMemory.route_of``): do the two signals fail on the same probes?
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import tempfile
from pathlib import Path

import torch

import editscope
from editscope.editors.reference import load_reference
from editscope.editors.registry import build_editor
from editscope.editors.scopememory import load_memory_preset
from editscope.evaluation.data import load_records
from editscope.evaluation.protocol import ProtocolConfig, anchored_request
from editscope.world import write_edits
from editscope.world import builtin_path, load_world
from editscope.world.edits import make_records
from editscope.world.render import fixed_render
from editscope.world.world import neighbours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="dev")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = load_world(builtin_path())
    seed = world.config.seed
    vlm = editscope.load("builtin")
    config = load_memory_preset("builtin")
    editor = build_editor("scopememory", vlm, config, reference=load_reference("world", "builtin", config.reference_size))
    path = write_edits(world, args.split, Path(tempfile.mkdtemp()) / args.split)
    cases = load_records("world", path, path.parent)
    same: dict[str, list[bool]] = defaultdict(list)
    joint: dict[str, list[tuple[bool, bool]]] = defaultdict(list)

    for index, record in enumerate(make_records(world, args.split)):
        subject = world.by_name(record["subject"])
        prompts = (record["src"], record["rephrase"])
        probes = [("own render", fixed_render(subject, "heldout", k, seed), p) for k in (1, 3) for p in prompts]
        probes.append(("look-alike", fixed_render(world.subject(subject.lookalike), "heldout", 0, seed), record["src"]))
        for j, _ in neighbours(world, subject.index, args.split):
            probes += [("neighbour", fixed_render(world.subject(j), "heldout", 2, seed), p) for p in prompts]
        editor.reset()  # no slot: the unedited model's answers, exactly
        before = vlm.answer(fixed_render(subject, "heldout", 0, seed), record["src"])
        same["edit image answers the truth"].append(before == record["pred"])
        agrees = [vlm.answer(image, prompt) == before for _, image, prompt in probes]
        editor.edit(anchored_request(cases[index], ProtocolConfig()))  # this record alone
        for (kind, image, prompt), agree in zip(probes, agrees):
            slot, _, shared = editor.route_of(image, prompt)
            same[kind].append(agree)
            joint[kind].append((slot >= 0 and shared, agree))
    editor.remove()
    print("kind | probes | same answer | reach the shared write | both | either")
    for kind, hits in same.items():
        pairs = joint.get(kind, [])
        n = max(len(pairs), 1)
        line = f"{kind} | {len(hits)} | {sum(hits) / len(hits):.3f}"
        if pairs:
            line += (f" | {sum(r for r, _ in pairs) / n:.3f} | {sum(r and a for r, a in pairs) / n:.3f}"
                     f" | {sum(r or a for r, a in pairs) / n:.3f}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
