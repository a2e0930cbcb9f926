"""ScopeMemory's routing thresholds on one pass over a world split: every record edited once (in
record order), then, for each record, where its other render and its rephrase are routed, M-Gen
and T-Gen, and how many of its near-miss probes are routed to any slot.

    python scripts/scopememory_thresholds.py '{"subject_threshold": 0.7}' [--split dev]

The JSON overrides the builtin preset (``{}``: the preset as it is).
"""

import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from editscope.editors.registry import build_editor
import editscope
from editscope.editors.reference import load_reference
from editscope.editors.scopememory import load_memory_preset
from editscope.evaluation.data import load_records
from editscope.world import builtin_path, load_world, write_edits

torch.set_num_threads(1)
split = sys.argv[sys.argv.index("--split") + 1] if "--split" in sys.argv else "dev"
vlm = editscope.load("builtin")
path = write_edits(load_world(builtin_path()), split, Path(tempfile.mkdtemp()) / split)
cases = load_records("world", path, path.parent)
cfg = replace(load_memory_preset("builtin"), **json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}"))
ed = build_editor("scopememory", vlm, cfg, reference=load_reference("world", "builtin", cfg.reference_size))
times = []
for c in cases:
    r = ed.edit(c.request); times.append(r.wall_time_s)
print("edit time median", sorted(times)[len(times)//2])
stats = {"render_own": 0, "render_other": 0, "render_none": 0, "mgen": 0.0, "mgen_routed": 0.0, "nm_fire": 0, "n": 0, "tgen": 0.0, "reph_own": 0}
for i, c in enumerate(cases):
    p = c.image_rephrase
    slot, loc, sh = ed.route_of(p.image, p.prompt)
    acc = ed.score(p.image, p.prompt, p.answer).token_accuracy
    stats["n"] += 1; stats["mgen"] += acc
    if slot == i: stats["render_own"] += 1; stats["mgen_routed"] += acc
    elif slot == -1: stats["render_none"] += 1
    else: stats["render_other"] += 1
    for q in c.near_miss:
        stats["nm_fire"] += int(ed.route_of(q.image, q.prompt)[0] != -1)
    stats["reph_own"] += int(ed.route_of(c.rephrase.image, c.rephrase.prompt)[0] == i)
    stats["tgen"] += ed.score(c.rephrase.image, c.rephrase.prompt, c.rephrase.answer).token_accuracy
n = stats["n"]
print(json.dumps({"render_own": stats["render_own"]/n, "render_none": stats["render_none"]/n, "render_other": stats["render_other"]/n,
  "mgen": stats["mgen"]/n, "mgen_given_routed": stats["mgen_routed"]/max(stats["render_own"],1), "nearmiss_fires": stats["nm_fire"]/n,
  "rephrase_own": stats["reph_own"]/n, "tgen": stats["tgen"]/n}))
print("tau_image", ed.memory.slots["tau_image"].quantile(torch.tensor([0.1,0.5,0.9])).tolist(), "tau_text", ed.memory.slots["tau_text"].quantile(torch.tensor([0.1,0.5,0.9])).tolist())
