"""Which rule turns a slot's scope examples into routing, measured on the router's own keys
before any edit is written (ScopeMemory with ``bench --scope-examples N``).

    python scripts/example_rule_study.py [--split dev] [--examples 1 3] [--limit 200]

For every record of the split the edit image's key is a would-be slot, its ``also`` renders
are positives and its ``never`` look-alike renders negatives. Each probe with an image that the
bench scores against the slot (the other render of the subject, M-Gen; the look-alike renders,
near-miss leakage) is routed by two rules on the image key alone:

- ``threshold``: one image threshold around the edit's key, raised to ``margin`` above the most
  similar ``never`` example and capped at the least similar ``also`` example; an edit whose cap
  lies below what a ``never`` example needs is refused (the rule ScopeMemory shipped first);
- ``nearest``: an input passes when its nearest positive (the edit or an ``also`` example) is
  at least the subject floor and at least ``margin`` nearer than its nearest ``never`` example.

It prints, per rule and N, the share of renders that pass, of look-alikes that pass, and of
edits refused. Keys are the configured preset's (centred, whitened as the editor does), and
nothing here depends on the world's names or templates beyond which images are which.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import editscope
from editscope.editors.reference import load_reference
from editscope.editors.registry import build_editor
from editscope.editors.scopememory.config import load_memory_preset
from editscope.evaluation.data import load_records
from editscope.world import builtin_path, load_world, write_edits


def image_key(editor, image, prompt) -> torch.Tensor:
    return editor._keys(editor.vlm.encode(image, prompt))[1][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="dev")
    parser.add_argument("--examples", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    most = max(args.examples)
    vlm = editscope.load("builtin")
    path = write_edits(load_world(builtin_path()), args.split, Path(tempfile.mkdtemp()) / args.split,
                       scope_examples=most)
    cases = load_records("world", path, path.parent, scope_examples=most)[: args.limit]
    editor = build_editor("scopememory", vlm, load_memory_preset("builtin"), reference=load_reference("world", "builtin", 128))
    cfg = editor.config
    floor, margin = cfg.subject_threshold, cfg.margin
    rows = []
    for case in cases:
        r = case.request
        edit = image_key(editor, r.image, r.prompt)
        also = torch.stack([image_key(editor, e.image, e.prompt) for e in r.also])
        never = torch.stack([image_key(editor, e.image, e.prompt) for e in r.never])
        renders = [image_key(editor, p.image, p.prompt) for p in [case.image_rephrase] if p is not None and p.image is not None]
        looks = [image_key(editor, p.image, p.prompt) for p in case.near_miss if p.image is not None]
        rows.append((edit, also, never, renders, looks))
    print(f"{args.split}: {len(rows)} edits, subject floor {floor}, margin {margin}\n")
    print("| rule | N | renders pass (M-Gen) | look-alikes pass (leakage) | edits refused |")
    print("|---|---|---|---|---|")
    for n in args.examples:
        for rule in ("threshold", "nearest"):
            render_hits, look_hits, refused = [], [], 0
            for edit, also, never, renders, looks in rows:
                a, q = also[:n], never[:n]
                if rule == "threshold":
                    cap = float((a @ edit).min())
                    need = float((q @ edit).max()) + margin
                    if need > cap:
                        refused += 1
                        render_hits += [False] * len(renders)
                        look_hits += [False] * len(looks)
                        continue
                    tau = max(floor, need)

                    def ok(x: torch.Tensor) -> bool:
                        return float(x @ edit) >= tau
                else:
                    positives = torch.cat([edit[None], a])

                    def ok(x: torch.Tensor) -> bool:
                        near = float((positives @ x).max())
                        return near >= floor and near >= float((q @ x).max()) + margin
                render_hits += [ok(x) for x in renders]
                look_hits += [ok(x) for x in looks]
            print(f"| {rule} | {n} | {sum(render_hits) / max(1, len(render_hits)):.3f} | "
                  f"{sum(look_hits) / max(1, len(look_hits)):.3f} | {refused} of {len(rows)} |")
    print("\nwithout examples (N = 0, subject floor only): renders pass "
          f"{sum(float(x @ e) >= floor for e, _, _, rs, _ in rows for x in rs) / max(1, sum(len(r[3]) for r in rows)):.3f}, "
          f"look-alikes pass {sum(float(x @ e) >= floor for e, _, _, _, ls in rows for x in ls) / max(1, sum(len(r[4]) for r in rows)):.3f}")


if __name__ == "__main__":
    main()
