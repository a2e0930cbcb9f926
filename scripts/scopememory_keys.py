"""Which keys separate what, before any slot exists: for every record of a world split, the
candidate router keys of the edit input and of each probe kind, and how close each probe is to
its own record's edit key against the other records' (ScopeMemory's key choice).

    python scripts/scopememory_keys.py [--split dev] [--reference 128]

For each key (``last``: the MLP input of a decoder layer at the last prompt token; ``qmean``: its
mean over the prompt's text positions; ``img``: its mean over the image tokens), centred on the
reference set and normalised, and each decoder layer, prints per probe kind the 5/25/50/75/95%
quantiles of the cosine to its own record's edit key, of the largest cosine to another record's,
and the share whose nearest edit key is its own. Then the text-only probes against the edit's
image and question keys (the text-only transfer ScopeMemory cannot route).
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

KINDS = ("rephrase", "render", "text", "nearmiss", "other", "loc", "mloc")


def collect(vlm, probe: Probe, store: dict) -> dict:
    inputs = vlm.encode(probe.image, probe.prompt, probe.answer)
    with torch.no_grad():
        vlm.forward(inputs)
    p = int(inputs.target_positions[0])
    text = torch.ones(p + 1, dtype=torch.bool)
    text[inputs.image_positions[inputs.image_positions <= p]] = False
    out = {}
    for layer, x in store.items():
        out[("last", layer)] = x[p]
        out[("qmean", layer)] = x[: p + 1][text].mean(0)
        out[("img", layer)] = x[inputs.image_positions].mean(0) if inputs.image_positions.numel() else None
    return out


def quantiles(values: list[float]) -> str:
    q = torch.quantile(torch.tensor(values), torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95]))
    return " ".join(f"{v:.2f}" for v in q.tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--reference", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    vlm = editscope.load("builtin")
    path = write_edits(load_world(builtin_path()), args.split, Path(tempfile.mkdtemp()) / args.split)
    cases = load_records("world", path, path.parent)
    layers = vlm.decoder_layers()
    store: dict[int, torch.Tensor] = {}
    for i, layer in enumerate(layers):
        layer.mlp.register_forward_pre_hook(lambda m, a, i=i: store.__setitem__(i, a[0].detach()[0].float()))
    background = [collect(vlm, r, store) for r in load_reference("world", "builtin", args.reference)]
    probes = {}
    for c in cases:
        r = c.request
        probes[c.fact_id] = {"edit": [collect(vlm, Probe(r.prompt, r.target, r.image), store)],
                             "rephrase": [collect(vlm, c.rephrase, store)], "render": [collect(vlm, c.image_rephrase, store)],
                             "text": [collect(vlm, p, store) for p in c.text_transfer],
                             "nearmiss": [collect(vlm, p, store) for p in c.near_miss],
                             "other": [collect(vlm, p, store) for p in c.other_fact],
                             "loc": [collect(vlm, c.loc, store)], "mloc": [collect(vlm, c.m_loc, store)]}
    facts = list(probes)

    def unit(key):
        mu = torch.stack([b[key] for b in background if b[key] is not None]).mean(0)
        return lambda v: (v - mu) / (v - mu).norm()

    for typ in ("last", "qmean", "img"):
        for layer in range(len(layers)):
            key = (typ, layer)
            n = unit(key)
            edits = torch.stack([n(probes[f]["edit"][0][key]) for f in facts])
            print(f"== {typ} layer {layer}")
            for kind in KINDS:
                own, other, nearest = [], [], []
                for i, f in enumerate(facts):
                    for p in probes[f][kind]:
                        if p[key] is None:
                            continue
                        s = edits @ n(p[key])
                        own.append(float(s[i]))
                        nearest.append(int(s.argmax()) == i)
                        s[i] = -9
                        other.append(float(s.max()))
                if own:
                    print(f"{kind:9s} own[{quantiles(own)}] max-other[{quantiles(other)}] "
                          f"nearest-own {sum(nearest) / len(nearest):.2f}")
    print("== text-only probes against the edit's keys")
    for layer in range(len(layers)):
        for edit_key, text_key in ((("img", layer), ("qmean", layer)), (("last", layer), ("qmean", layer))):
            ne, nt = unit(edit_key), unit(text_key)
            edits = torch.stack([ne(probes[f]["edit"][0][edit_key]) for f in facts])
            own, nearest, unrelated = [], [], []
            for i, f in enumerate(facts):
                for p in probes[f]["text"]:
                    s = edits @ nt(p[text_key])
                    own.append(float(s[i]))
                    nearest.append(int(s.argmax()) == i)
                unrelated += [float((edits @ nt(p[text_key])).max()) for p in probes[f]["loc"]]
            print(f"layer {layer} edit {edit_key[0]:5s} text {text_key[0]}: nearest-own {sum(nearest) / len(nearest):.2f} "
                  f"own median {torch.tensor(own).median():.2f}, unrelated text's largest 95% "
                  f"{torch.tensor(unrelated).quantile(0.95):.2f}")


if __name__ == "__main__":
    main()
