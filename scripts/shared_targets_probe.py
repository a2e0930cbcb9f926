"""Can any write at ScopeMemory's slot sites spell a target that the shared phase leaves unfinished?

    python scripts/shared_targets_probe.py [--edits 40] [--lr 1.0] [--steps 30] [--sites last|all]

For the first N world:dev records, on the built-in model with the ``builtin`` preset: the shared
phase's batch (the edit input and its training views, the target with its end token) is given
free vectors, one per target position, added to the output of the slot sites (``last``: the last
site only; ``all``: every site), optimised directly with Adam (``--lr``, at most ``--steps``
steps, stopping at the shared phase's ``shared_stop_loss``). No write is constrained by the
codes here: if these cannot bring the target's NLL down, no write at the sites through the
shared codes can. Then the shared write that reproduces those vectors from the shared codes
(``B = D C^T (C C^T + lam I)^-1``, site by site, each site's codes taken with the writes before it
applied) is scored, whole and truncated to ``slot_rank``, next to the editor's own shared phase
(Adam on ``B``). Each is scored on the batch (the worst input's mean NLL) and on the record's
other render (the M-Gen probe's image and question, with the edit's target). Prints one line per
record and the medians for the edits whose own shared phase ran to its cap and for the others.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

import editscope
from editscope.editors.reference import load_reference
from editscope.editors.registry import build_editor
from editscope.editors.scopememory import load_memory_preset
from editscope.editors.scopememory.facts import fact_bytes, truncated
from editscope.editors.scopememory.views import image_views, view_seed
from editscope.evaluation.data import load_records
from editscope.types import ModelInputs
from editscope.world import builtin_path, load_world, write_edits


def nll(vlm, inputs: ModelInputs) -> torch.Tensor:
    """The target's mean NLL per row (B,)."""
    logits = vlm.forward(inputs).index_select(1, inputs.target_positions).float()
    return F.cross_entropy(logits.transpose(1, 2), inputs.target_ids.expand(logits.shape[0], -1),
                           reduction="none").mean(1)


def free_vectors(editor, vlm, batch: ModelInputs, chosen: list[int], lr: float, steps: int, stop: float):
    """Per chosen site, free vectors (B, n, d_out) at the target positions, optimised on the target."""
    modules = list(editor.memory.modules.values())
    positions = batch.target_positions
    vectors = {i: torch.zeros(batch.tensors["input_ids"].shape[0], positions.numel(),
                              modules[i].base_layer.out_features, requires_grad=True) for i in chosen}

    def adder(i):
        def hook(_module, _args, out):
            out = out.clone()
            out[:, positions] = out[:, positions] + vectors[i].to(out.dtype)
            return out
        return hook

    hooks = [modules[i].base_layer.register_forward_hook(adder(i)) for i in chosen]
    optimiser = torch.optim.Adam(list(vectors.values()), lr=lr)
    try:
        with editor.memory.writing(False, False):
            for _ in range(steps):
                loss = nll(vlm, batch)
                if bool((loss < stop).all()):
                    break
                optimiser.zero_grad()
                loss.mean().backward()
                optimiser.step()
            with torch.no_grad():
                loss = nll(vlm, batch)
    finally:
        for hook in hooks:
            hook.remove()
    return {i: v.detach() for i, v in vectors.items()}, float(loss.max())


def solve(editor, vlm, batch: ModelInputs, vectors: dict, lam: float) -> None:
    """Set each chosen site's scratch ``B_shared`` to the least-squares map from its shared codes
    to its free vectors (divided by the site's scaling), earlier sites first."""
    modules, sites = list(editor.memory.modules.values()), list(editor.memory.sites.values())
    for i in sorted(vectors):
        seen: dict[str, torch.Tensor] = {}
        hook = modules[i].base_layer.register_forward_hook(lambda _m, args, _o: seen.__setitem__("x", args[0].detach()))
        with torch.no_grad(), editor.memory.writing(False, True):  # the sites solved so far apply
            vlm.forward(batch)
        hook.remove()
        codes = (seen["x"][:, batch.target_positions].float() @ sites[i].A_shared.float().T).reshape(-1, sites[i].rank_shared)
        targets = vectors[i].reshape(-1, vectors[i].shape[-1]) / sites[i].scaling
        gram = codes.T @ codes
        ridge = lam * float(gram.diagonal().mean()) * torch.eye(gram.shape[0])
        with torch.no_grad():
            sites[i].B_shared.copy_(torch.linalg.solve(gram + ridge, codes.T @ targets).T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1.0, help="Adam rate of the free vectors")
    parser.add_argument("--steps", type=int, default=30, help="at most this many steps on the free vectors")
    parser.add_argument("--sites", choices=("last", "all"), default="last")
    parser.add_argument("--ridge", type=float, default=1e-2, help="ridge of the solve, times the codes' mean energy")
    args = parser.parse_args()
    torch.set_num_threads(1)
    vlm = editscope.load("builtin")
    config = load_memory_preset("builtin")
    editor = build_editor("scopememory", vlm, config, reference=load_reference("world", "builtin", config.reference_size))
    path = write_edits(load_world(builtin_path()), "dev", Path(tempfile.mkdtemp()) / "dev")
    cases = load_records("world", path, path.parent)[: args.edits]
    sites = list(editor.memory.sites.values())
    chosen = [len(sites) - 1] if args.sites == "last" else list(range(len(sites)))
    cap = config.steps * (1 + config.train_views)
    stop = (config.shared_stop_loss, config.shared_stop_margin)
    rows = []
    for case in cases:
        request = case.request
        fact = fact_bytes(request, vlm.encode(request.image, request.prompt, request.target))
        views = image_views(request.image, config.views, seed=view_seed(fact, config.seed))[: config.train_views]
        inputs = [vlm.encode(image, request.prompt, request.target, end=True) for image in (request.image, *views)]
        batch = ModelInputs.stack(inputs)
        render = vlm.encode(case.image_rephrase.image, case.image_rephrase.prompt, request.target, end=True)
        editor._reset_scratch()
        vectors, free = free_vectors(editor, vlm, batch, chosen, args.lr, args.steps, stop[0])
        solve(editor, vlm, batch, vectors, args.ridge)
        scores = {"free": (free, None)}
        with torch.no_grad(), editor.memory.writing(False, True):
            scores["solved"] = (float(nll(vlm, batch).max()), float(nll(vlm, render)[0]))
            for site in sites:
                left, right = truncated(site.B_shared.detach().clone(), config.slot_rank)
                site.B_shared.copy_(left @ right.T)
            scores["rank"] = (float(nll(vlm, batch).max()), float(nll(vlm, render)[0]))
        editor._reset_scratch()
        steps = editor._phase(inputs, local=False, shared=True, stop=stop)
        with torch.no_grad(), editor.memory.writing(False, True):
            scores["adam"] = (float(nll(vlm, batch).max()), float(nll(vlm, render)[0]))
        rows.append((steps >= cap, scores))
        print(f"{request.target!r:22} shared phase {steps:2d} steps | batch NLL: free {free:.3f}, solved "
              f"{scores['solved'][0]:.3f}, rank {config.slot_rank} {scores['rank'][0]:.3f}, Adam {scores['adam'][0]:.3f} "
              f"| render NLL: solved {scores['solved'][1]:.3f}, rank {config.slot_rank} {scores['rank'][1]:.3f}, "
              f"Adam {scores['adam'][1]:.3f}", flush=True)
    editor.remove()
    print(f"free vectors at {args.sites} site(s), lr {args.lr}, at most {args.steps} steps; medians:")
    for label, capped in (("shared phase at its cap", True), ("under the cap", False)):
        group = [s for c, s in rows if c == capped]
        if not group:
            continue
        med = lambda key, j: statistics.median(s[key][j] for s in group)  # noqa: E731
        print(f"  {label} ({len(group)}): batch NLL free {med('free', 0):.3f}, solved {med('solved', 0):.3f}, "
              f"rank {config.slot_rank} {med('rank', 0):.3f}, Adam {med('adam', 0):.3f}; render NLL solved "
              f"{med('solved', 1):.3f}, rank {config.slot_rank} {med('rank', 1):.3f}, Adam {med('adam', 1):.3f}")


if __name__ == "__main__":
    main()
