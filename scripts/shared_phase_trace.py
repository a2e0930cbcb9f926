"""How far a ScopeMemory shared phase gets, step by step, on the built-in model.

    python scripts/shared_phase_trace.py [--edits 40] [--split dev] [--config '{"shared_lr": 0.03}'] [--tokens] [--codes]

Edits the first N records of a world split in order with the ``builtin`` preset (with the
``--config`` JSON overrides; record anchors, as the bench) and records, at every step of the
shared phase, the target's mean NLL and smallest logit margin on each input it trains on (the
edit input and its training views). Prints, for the edits that ran the phase to its cap and for
the others, the median over edits of the worst input's NLL and margin at a few steps, and the
phase's steps. The phase stops once every input is below ``shared_stop_loss`` or above
``shared_stop_margin``. With ``--tokens``, also each capped edit's target and the NLL of each of
its tokens on the edit input under the shared write alone, as the phase left it; with
``--codes``, for every edit, how alike the shared codes of its target positions are (see
:func:`codes`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
from pathlib import Path

import torch

import editscope
from editscope.editors.reference import load_reference
from editscope.editors.registry import build_editor
from editscope.editors.scopememory import load_memory_preset
from editscope.evaluation.data import load_records
from editscope.evaluation.protocol import ProtocolConfig, anchored_request
from editscope.world import builtin_path, load_world, write_edits

AT = (0, 5, 10, 20, 30, 45)


def codes(editor, vlm, answer) -> str:
    """At each slot site, the shared codes ``A_shared x`` of the edit input's target positions
    (unedited): their mean pairwise cosine and the ratio of their largest to smallest singular
    value. Alike codes (cosine near 1, a large ratio) would make one write hard to fit to every
    token."""
    inputs: dict[int, torch.Tensor] = {}
    modules = list(editor.memory.modules.values())
    hooks = [m.base_layer.register_forward_hook(lambda _m, args, _o, i=i: inputs.__setitem__(i, args[0].detach()))
             for i, m in enumerate(modules)]
    try:
        with torch.no_grad(), editor.memory.writing(False, False):
            vlm.forward(answer)
    finally:
        for hook in hooks:
            hook.remove()
    cells = []
    for i, site in enumerate(editor.memory.sites.values()):
        code = inputs[i][0, answer.target_positions].float() @ site.A_shared.float().T
        unit = torch.nn.functional.normalize(code, dim=-1)
        n = code.shape[0]
        cosine = float((unit @ unit.T)[~torch.eye(n, dtype=torch.bool)].mean()) if n > 1 else 1.0
        values = torch.linalg.svdvals(code)
        cells.append(f"site {i}: {n} positions, mean cosine {cosine:.2f}, singular ratio {float(values[0] / values[-1]):.1f}")
    return "; ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--config", default="{}", help="JSON overrides of the builtin preset")
    parser.add_argument("--tokens", action="store_true", help="per-token NLL of each capped edit's target")
    parser.add_argument("--codes", action="store_true",
                        help="for each edit, how alike its target positions' shared codes are at each site")
    args = parser.parse_args()
    torch.set_num_threads(1)
    vlm = editscope.load("builtin")
    path = write_edits(load_world(builtin_path()), args.split, Path(tempfile.mkdtemp()) / args.split)
    cases = load_records("world", path, path.parent)[: args.edits]
    config = dataclasses.replace(load_memory_preset("builtin"), **json.loads(args.config))
    editor = build_editor("scopememory", vlm, config, reference=load_reference("world", "builtin", config.reference_size))
    cap = config.steps * (1 + config.train_views)
    phases: list[list[tuple[float, float]]] = []  # per step of the current edit's phases: worst NLL, margin
    original_phase, original_loss = editor._phase, editor._loss_and_margin

    def loss_and_margin(inputs):
        loss, margins = original_loss(inputs)
        phases[-1].append((max(loss.detach().tolist()), min(margins)))
        return loss, margins

    def phase(batch, local, shared, stop):
        phases.append([] if not local else None)  # only the shared phase is traced
        if local:
            editor._loss_and_margin = original_loss
        steps = original_phase(batch, local, shared, stop)
        editor._loss_and_margin = loss_and_margin
        if not local and args.tokens and steps >= cap:
            answer = batch[0]
            with torch.no_grad(), editor.memory.writing(False, True):
                logits = vlm.forward(answer)[0, answer.target_positions].float()
            nll = torch.nn.functional.cross_entropy(logits, answer.target_ids, reduction="none")
            pieces = [vlm.tokenizer.decode([i]) for i in answer.target_ids.tolist()]
            print("  ".join(f"{piece!r} {value:.2f}" for piece, value in zip(pieces, nll.tolist())))
        if not local and args.codes:
            kind = "capped" if steps >= cap else f"{steps} steps"
            print(f"  {kind} {vlm.tokenizer.decode(batch[0].target_ids.tolist())!r}: " + codes(editor, vlm, batch[0]))
        return steps

    editor._phase, editor._loss_and_margin = phase, loss_and_margin
    traces: dict[str, list[list[tuple[float, float]]]] = {"at the cap": [], "under the cap": []}
    spelt = {kind: 0 for kind in traces}  # targets with a word the tokenizer splits into pieces
    for case in cases:
        phases.clear()
        editor.edit(anchored_request(case, ProtocolConfig()))
        shared = [p for p in phases if p]
        if shared:
            trace = shared[0]
            kind = "at the cap" if len(trace) >= cap else "under the cap"
            traces[kind].append(trace)
            spelt[kind] += any(len(vlm.tokenizer.encode(" " + word, add_special_tokens=False)) > 1
                               for word in case.request.target.split())
    print(f"shared phase: cap {cap} steps, stop at NLL < {config.shared_stop_loss} or margin >= "
          f"{config.shared_stop_margin} on every input; lr {config.shared_lr or config.lr}")
    for kind, runs in traces.items():
        if not runs:
            continue
        steps = statistics.median(len(t) - (len(t) < cap) for t in runs)
        cells = []
        for at in AT:
            rows = [t[at] for t in runs if at < len(t)]
            if rows:
                cells.append(f"step {at}: NLL {statistics.median(r[0] for r in rows):.3f} "
                             f"margin {statistics.median(r[1] for r in rows):+.1f} ({len(rows)})")
        last = [t[-1] for t in runs]
        cells.append(f"last: NLL {statistics.median(r[0] for r in last):.3f} "
                     f"margin {statistics.median(r[1] for r in last):+.1f}")
        print(f"{kind}: {len(runs)} edits, median {steps:.0f} steps; {spelt[kind]} of them have a target word "
              f"the tokenizer splits into several pieces")
        for cell in cells:
            print(f"  {cell}")


if __name__ == "__main__":
    main()
