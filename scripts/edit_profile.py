"""Where a ScopeMemory edit spends its time, on the built-in model.

    python scripts/edit_profile.py [--edits 40] [--split dev] [--top 25] [--kind all|under|cap]

Edits the first N records of a world split in order with the ``builtin`` preset (record
anchors, as the bench; each record's fact is new), under ``cProfile``. Prints the median edit
time of the edits that ran the shared phase to its cap (``steps`` per input: the edit input and
its ``train_views`` views) and of the others, then the profile's top entries by cumulative time,
of all edits or (``--kind``) of those under the cap or at it only.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch

import editscope
from editscope.editors.reference import load_reference
from editscope.editors.registry import build_editor
from editscope.editors.scopememory import load_memory_preset
from editscope.evaluation.data import load_records
from editscope.evaluation.protocol import ProtocolConfig, anchored_request
from editscope.world import builtin_path, load_world, write_edits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--kind", choices=("all", "under", "cap"), default="all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    vlm = editscope.load("builtin")
    path = write_edits(load_world(builtin_path()), args.split, Path(tempfile.mkdtemp()) / args.split)
    cases = load_records("world", path, path.parent)[: args.edits]
    config = load_memory_preset("builtin")
    editor = build_editor("scopememory", vlm, config, reference=load_reference("world", "builtin", config.reference_size))
    requests = [anchored_request(case, ProtocolConfig()) for case in cases]
    profiles: dict[str, list[cProfile.Profile]] = {"under": [], "cap": []}
    cap = config.steps * (1 + config.train_views)  # the shared phase's most steps (edit input and views)
    times: dict[str, list[float]] = {"under the cap": [], "at the shared phase's cap": []}
    for request in requests:
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        steps = editor.edit(request).steps
        profile.disable()
        times["at the shared phase's cap" if steps >= cap else "under the cap"].append(time.perf_counter() - start)
        profiles["cap" if steps >= cap else "under"].append(profile)
    for kind, values in times.items():
        if values:
            print(f"{kind}: {len(values)} edits, median {statistics.median(values) * 1000:.1f} ms")
    chosen = [p for kind, ps in profiles.items() if args.kind in ("all", kind) for p in ps]
    if chosen:
        pstats.Stats(*chosen).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
