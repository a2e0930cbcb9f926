"""Do the edit image's own augmentations widen ScopeMemory's subject rule toward the subject's
other images, and not toward unrelated ones? (Measured before any routing change.)

    python scripts/augment_study.py [--split dev] [--views 0 4 8] [--thresholds 0.5 0.55 0.6]

Builds ScopeMemory with the builtin preset and its reference set (which centres and whitens the
image keys), takes each record's edit image as a would-be slot, and adds ``K`` generic views of
that image (``editscope.editors.scopememory.views``: crops, shifts, small rotations, light and
colour jitter) as further positives of the slot, scored by the nearest positive, as the router
scores ``also`` examples. For each K and image threshold it prints the share of other renders
whose own slot passes, and the share of look-alikes, other facts' images and unrelated images
that pass *any* slot (their own record's slot excluded for other facts, which show the same
subject). A probe passes a slot where its question key is within the preset's text threshold of
the edit's and its image key within the image threshold of the slot's nearest positive.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import editscope
from editscope.editors.reference import load_reference
from editscope.editors.registry import build_editor
from editscope.editors.scopememory import load_memory_preset
from editscope.editors.scopememory.views import image_views
from editscope.evaluation.data import load_records
from editscope.world import builtin_path, load_world, write_edits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--views", type=int, nargs="*", default=[0, 4, 8])
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.5, 0.55, 0.6, 0.65])
    args = parser.parse_args()
    torch.set_num_threads(1)
    vlm = editscope.load("builtin")
    cfg = load_memory_preset("builtin")
    editor = build_editor("scopememory", vlm, cfg, reference=load_reference("world", "builtin", cfg.reference_size))
    path = write_edits(load_world(builtin_path()), args.split, Path(tempfile.mkdtemp()) / args.split)
    cases = load_records("world", path, path.parent)

    def keys(image, prompt):
        q, v, _ = editor._keys(vlm.encode(image, prompt))
        return q[0], v[0]

    def key(image, prompt):
        return keys(image, prompt)[1]

    most = max(args.views)
    positives, questions, probes = [], [], {"render": [], "look-alike": [], "other fact": [], "unrelated": []}
    for n, c in enumerate(cases):
        r = c.request
        q, v = keys(r.image, r.prompt)
        questions.append(q)
        positives.append(torch.stack([v] + [key(view, r.prompt) for view in image_views(r.image, most, seed=n)]))
        probes["render"].append((n, keys(c.image_rephrase.image, c.image_rephrase.prompt)))
        probes["look-alike"] += [(n, keys(p.image, p.prompt)) for p in c.near_miss if p.image is not None]
        probes["other fact"] += [(n, keys(p.image, p.prompt)) for p in c.other_fact if p.image is not None]
        probes["unrelated"].append((n, keys(c.m_loc.image, c.m_loc.prompt)))
    Q = torch.stack(questions)
    print(f"{args.split}: {len(cases)} slots\n")
    print("| views | image threshold | render own | look-alike any | other fact any | unrelated any |")
    print("|---|---|---|---|---|---|")
    for k in args.views:
        bank = torch.stack([p[: k + 1] for p in positives])  # (slots, k+1, d)
        for t in args.thresholds:
            shares = {}
            for kind, rows in probes.items():
                hits = []
                for n, (q, v) in rows:
                    nearest = torch.where(Q @ q >= cfg.text_threshold, (bank @ v).amax(1), -1.0)
                    if kind == "render":
                        hits.append(bool(nearest[n] >= t))
                    else:
                        if kind == "other fact":
                            nearest[n] = -1
                        hits.append(bool((nearest >= t).any()))
                shares[kind] = sum(hits) / len(hits)
            print(f"| {k} | {t:.2f} | {shares['render']:.3f} | {shares['look-alike']:.3f} | "
                  f"{shares['other fact']:.3f} | {shares['unrelated']:.3f} |")


if __name__ == "__main__":
    main()
