"""Where ScopeMemory routes a few records' probes when each record is edited alone, on the
unedited model, under several configs: does a probe's route come from the slot itself or from
the stream around it?

    python scripts/route_alone.py '{}' '{"views": 0}' --split test --records 15 59 111

Each JSON overrides the builtin preset. For each record and config it prints the route
(slot, local write, shared write; slot -1: none) of the look-alike probes, the other fact's
probes with an image, and the other render.
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
from editscope.evaluation.data import load_records
from editscope.world import builtin_path, load_world, write_edits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="JSON overrides of the builtin preset")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--records", type=int, nargs="+", required=True, help="record indices")
    args = parser.parse_args()
    torch.set_num_threads(1)
    vlm = editscope.load("builtin")
    path = write_edits(load_world(builtin_path()), args.split, Path(tempfile.mkdtemp()) / args.split)
    cases = load_records("world", path, path.parent)
    for index in args.records:
        case = cases[index]
        for text in args.configs:
            config = replace(load_memory_preset("builtin"), **json.loads(text))
            editor = build_editor("scopememory", vlm, config,
                                  reference=load_reference("world", "builtin", config.reference_size))
            editor.edit(case.request)
            look = [editor.route_of(p.image, p.prompt) for p in case.near_miss]
            other = [editor.route_of(p.image, p.prompt) for p in case.other_fact if p.image is not None]
            render = editor.route_of(case.image_rephrase.image, case.image_rephrase.prompt)
            print(f"record {index} {text}: look-alike {look} other fact {other} render {render}", flush=True)
            editor.remove()


if __name__ == "__main__":
    main()
