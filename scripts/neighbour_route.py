"""Do one-attribute neighbours of an edited subject route to its slot (edited alone)?

    python scripts/neighbour_route.py '{}' '{"reference_size": 1024}' [--split dev]

For each record of the split, edits it alone on the unedited model (record anchors, as the bench)
and routes, with the edit's question and with its M-Gen probe's question: the subject's held-out
renders 1 and 3 (*own*: the shared write should reach them) and held-out render 2 of every
subject of the split or the locality split that differs from the edited one in exactly one look
attribute, other than its designated look-alike (*neighbour*: nothing should reach them). Prints,
per config, the share of each kind routed to the slot with its shared write, neighbours by the
attribute they differ in. ``--pictures`` also prints, for every neighbour probe that reaches the
slot, how many of that neighbour's seen renders 0-7 and held-out renders 0-3 do (same question).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch

import editscope
from editscope.editors.reference import load_reference
from editscope.editors.registry import build_editor
from editscope.editors.scopememory import load_memory_preset
from editscope.evaluation.data import load_records
from editscope.evaluation.protocol import ProtocolConfig, anchored_request
from editscope.world import builtin_path, load_world, write_edits
from editscope.world.edits import make_records
from editscope.world.render import fixed_render
from editscope.world.world import neighbours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="JSON overrides of the builtin preset")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--records", type=int, default=None, help="the first N records only")
    parser.add_argument("--pictures", action="store_true", help="route the other pictures of each neighbour let in")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = load_world(builtin_path())
    seed = world.config.seed
    records = make_records(world, args.split)[: args.records]
    vlm = editscope.load("builtin")
    path = write_edits(world, args.split, Path(tempfile.mkdtemp()) / args.split)
    cases = load_records("world", path, path.parent)
    protocol = ProtocolConfig()
    for text in args.configs:
        config = replace(load_memory_preset("builtin"), **json.loads(text))
        editor = build_editor("scopememory", vlm, config,
                              reference=load_reference("world", "builtin", config.reference_size))
        routed: dict[str, list[bool]] = defaultdict(list)
        for index, record in enumerate(records):
            subject = world.by_name(record["subject"])
            case = cases[index]
            editor.reset()  # each record alone on the unedited model
            editor.edit(anchored_request(case, protocol))
            prompts = (case.request.prompt, case.image_rephrase.prompt)

            def reaches(image) -> list[bool]:
                out = []
                for prompt in prompts:
                    slot, _, shared = editor.route_of(image, prompt)
                    out.append(slot >= 0 and shared)
                return out

            for k in (1, 3):
                routed["own"] += reaches(fixed_render(subject, "heldout", k, seed))
            for j, attribute in neighbours(world, subject.index, args.split):
                other = world.subject(j)
                hits = reaches(fixed_render(other, "heldout", 2, seed))
                for prompt, hit in zip(prompts, hits):
                    if hit and args.pictures:
                        seen = sum(editor.route_of(fixed_render(other, "seen", k, seed), prompt)[2] for k in range(8))
                        held = sum(editor.route_of(fixed_render(other, "heldout", k, seed), prompt)[2] for k in range(4))
                        print(f"{text} record {index} ({subject.name}) neighbour {other.name} ({attribute}): "
                              f"seen renders {seen} of 8, held-out {held} of 4 reach the slot", flush=True)
                routed["neighbour"] += hits
                routed[f"neighbour by {attribute}"] += hits
        editor.remove()
        for kind, hits in sorted(routed.items()):
            print(f"{text} | {kind} | {len(hits)} | {sum(hits) / max(len(hits), 1):.3f}", flush=True)


if __name__ == "__main__":
    main()
