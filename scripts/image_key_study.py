"""Which image key separates a subject from the others, before any slot exists (ScopeMemory's
subject rule, the one every cross-slot misroute on world:test goes through).

    python scripts/image_key_study.py [--split dev] [--reference 128] [--target-tpr 0.92]

For every record of the split, the edit image's key is a would-be slot. For each candidate key
(a decoder layer's MLP input over the image tokens: its mean, or the tokens laid end to end;
centred on the reference set, optionally whitened by the reference covariance) and each rule
(a fixed cosine threshold, or the cosine's lead over the input's nearest reference image), it
prints the share of other renders that pass their own slot, and the share of look-alikes, of
other facts' images and of unrelated images that pass *any* slot, with the rule's threshold set
so that the renders pass at ``--target-tpr``. It also prints the per-pair false-pass rate and
what it gives for twice as many slots (``1 - (1 - p) ** (2 * slots)``), since a split with more
facts gives each unrelated image more slots to pass by chance.

*Neighbours* are look-alikes nothing designates: held-out render 2 of every subject of the split
or of the locality split that differs from a record's subject in exactly one look attribute (its
designated look-alike excluded). The world's locality probes are drawn at random, so some of
them are such neighbours of an edited subject (``scripts/mloc_neighbours.py``); the column gives
the share of (record, neighbour) pairs whose neighbour passes the record's slot.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import editscope
from editscope.editors.reference import load_reference
from editscope.evaluation.data import load_records
from editscope.types import Probe
from editscope.world import builtin_path, load_world, write_edits
from editscope.world.edits import make_records
from editscope.world.render import fixed_render
from editscope.world.world import neighbours

NEGATIVES = ("nearmiss", "other", "mloc", "neighbour")
POOLS = {  # how the image tokens (n_image, d) of one layer become one vector
    "mean": lambda x: x.mean(0),
    "mean+std": lambda x: torch.cat([x.mean(0), x.std(0)]),
    "tokens": lambda x: x.flatten(),
}


def image_tokens(vlm, probe: Probe, store: dict) -> dict[int, torch.Tensor] | None:
    """Per decoder layer, the MLP input at the image positions (n_image, d); ``None`` without image."""
    if probe.image is None:
        return None
    inputs = vlm.encode(probe.image, probe.prompt, probe.answer)
    with torch.no_grad():
        vlm.forward(inputs)
    return {layer: x[inputs.image_positions] for layer, x in store.items()}


def whitener(keys: torch.Tensor, shrink: float) -> torch.Tensor:
    """(Σ + λ I)^{-1/2} of the centred reference keys (n, d), λ = shrink · mean eigenvalue."""
    centred = keys - keys.mean(0)
    cov = centred.T @ centred / max(1, keys.shape[0] - 1)
    lam = shrink * float(cov.diagonal().mean())
    values, vectors = torch.linalg.eigh(cov + lam * torch.eye(cov.shape[0]))
    return vectors @ torch.diag(values.clamp(min=1e-12).rsqrt()) @ vectors.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--reference", type=int, default=128)
    parser.add_argument("--target-tpr", type=float, default=0.92)
    parser.add_argument("--layers", type=int, nargs="*", help="decoder layers to try (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    vlm = editscope.load("builtin")
    path = write_edits(load_world(builtin_path()), args.split, Path(tempfile.mkdtemp()) / args.split)
    cases = load_records("world", path, path.parent)
    store: dict[int, torch.Tensor] = {}
    for i, layer in enumerate(vlm.decoder_layers()):
        layer.mlp.register_forward_pre_hook(lambda m, a, i=i: store.__setitem__(i, a[0].detach()[0].float()))
    reference = [t for t in (image_tokens(vlm, p, store) for p in load_reference("world", "builtin", args.reference)) if t]
    edits, probes = [], {"render": [], **{k: [] for k in NEGATIVES}}
    for n, c in enumerate(cases):
        r = c.request
        edits.append(image_tokens(vlm, Probe(r.prompt, r.target, r.image), store))
        probes["render"].append((n, image_tokens(vlm, c.image_rephrase, store)))
        probes["nearmiss"] += [(n, image_tokens(vlm, p, store)) for p in c.near_miss if p.image is not None]
        probes["other"] += [(n, image_tokens(vlm, p, store)) for p in c.other_fact if p.image is not None]
        probes["mloc"].append((n, image_tokens(vlm, c.m_loc, store)))
    world = load_world(builtin_path())
    for n, record in enumerate(make_records(world, args.split)):
        for j, _ in neighbours(world, world.by_name(record["subject"]).index, args.split):
            image = fixed_render(world.subject(j), "heldout", 2, world.config.seed)
            probes["neighbour"].append((n, image_tokens(vlm, Probe(cases[n].request.prompt, "x", image), store)))
    slots = len(edits)
    print(f"{args.split}: {slots} slots, {len(reference)} reference images; thresholds set for render pass "
          f"{args.target_tpr:.2f}\n")
    print("| key | rule | threshold | render own | look-alike any | other fact any | unrelated any | pair false-pass | "
          f"unrelated any at {2 * slots} slots | neighbour pair |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for layer in sorted(store) if args.layers is None else args.layers:
        for pool, pooling in POOLS.items():
            def raw(t):
                return pooling(t[layer])

            ref = torch.stack([raw(t) for t in reference])
            centre = ref.mean(0)
            variants = {"centred": None}
            if pool != "tokens":
                variants.update({f"whitened {v:g}": whitener(ref, v) for v in (0.03, 0.1, 0.3, 1.0)})
            for name, w in variants.items():
                def key(t):
                    v = raw(t) - centre
                    v = v if w is None else w @ v
                    return v / v.norm()

                E = torch.stack([key(t) for t in edits])
                R = torch.stack([key(t) for t in reference])
                sims = {kind: [(n, E @ key(t), float((R @ key(t)).max())) for n, t in rows]
                        for kind, rows in probes.items()}
                for rule in ("cosine", "lead over reference"):
                    def score(s, ref_best):
                        return s if rule == "cosine" else s - ref_best

                    own = torch.tensor([float(score(s[n], b)) for n, s, b in sims["render"]])
                    t = float(torch.quantile(own, 1 - args.target_tpr))
                    shares, pair = {}, []
                    for kind in NEGATIVES:
                        hits = []
                        if kind == "neighbour":  # a pair: the neighbour against its record's slot
                            hits = [bool(score(s, b)[n] >= t) for n, s, b in sims[kind]]
                            shares[kind] = sum(hits) / max(len(hits), 1)
                            continue
                        for n, s, b in sims[kind]:
                            mask = torch.ones(slots, dtype=torch.bool)
                            if kind == "other":  # the other fact's image is the edit's own subject
                                mask[n] = False
                            passed = score(s, b)[mask] >= t
                            hits.append(bool(passed.any()))
                            if kind == "mloc":
                                pair.append(float(passed.float().mean()))
                        shares[kind] = sum(hits) / len(hits)
                    p = sum(pair) / len(pair)
                    print(f"| layer {layer} {pool} {name} | {rule} | {t:.3f} | {float((own >= t).float().mean()):.3f} | "
                          f"{shares['nearmiss']:.3f} | {shares['other']:.3f} | {shares['mloc']:.3f} | {p:.4f} | "
                          f"{1 - (1 - p) ** (2 * slots):.3f} | {shares['neighbour']:.3f} |")


if __name__ == "__main__":
    main()
