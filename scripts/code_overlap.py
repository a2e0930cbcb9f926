"""How much a local write made for one edit reaches each kind of probe, at every edit site of the
built-in model, before any edit (the reference prior folded).

A local step writes ``B_l <- B_l - eta * grad @ P_l`` with ``grad = delta z_e^T``, so at a site
it changes the output of an input with code ``z_p`` by ``delta * (z_e^T P_l z_p)`` and the edit's
own output by ``delta * (z_e^T P_l z_e)``. The ratio ``reach = z_e^T P_l z_p / z_e^T P_l z_e`` is
the share of the edit's own change that lands on the probe: an editor that writes along its
codes transfers where it is near 1 and leaves alone where it is near 0. Printed per probe kind
(mean over world:dev cases of the mean over sites) with the plain cosine of the codes beside it
(``P = I``), and for the edit inputs of the other cases (another fact edited later in a stream:
what moves an earlier edit), split by whether they ask for the same attribute. Never run on world:test.

    python scripts/code_overlap.py --edits 30                  # the builtin preset
    python scripts/code_overlap.py --edits 30 'lambda_local=500'
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from tune_builtin import builtin_scopeedit  # scripts/ is on the path when this script runs

from editscope.core.capture import Positions, capture_codes
from editscope.editors.recursive import PROJECTOR, ScopeEdit
from editscope.evaluation.data import load_records
from editscope.types import Probe
from editscope.world import builtin_path, load_world, write_edits


def codes(editor: ScopeEdit, probe: Probe) -> dict[str, torch.Tensor]:
    """The local code z of every decoder site for one probe (teacher-forced on its answer)."""
    inputs = editor.vlm.encode(probe.image, probe.prompt, probe.answer)
    decoder = {p: s for p, s in editor.sites.items() if p not in editor.groups.get(PROJECTOR, ())}
    with torch.no_grad(), capture_codes(decoder, Positions(inputs.target_positions, inputs.image_positions)) as cap:
        editor.vlm.forward(inputs)
    return {p: r.z.double() for p, r in cap.sites.items()}


Codes = dict[str, torch.Tensor]


def reach(edit: Codes, probe: Codes, P: Codes) -> tuple[float, float]:
    """(mean over sites of z_e^T P z_p / z_e^T P z_e, mean over sites of cos(z_e, z_p))."""
    ratios, cosines = [], []
    for path, z in edit.items():
        pz = P[path] @ z
        ratios.append(float(pz @ probe[path] / (pz @ z)))
        cosines.append(float(torch.nn.functional.cosine_similarity(z, probe[path], dim=0)))
    return statistics.fmean(ratios), statistics.fmean(cosines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="?", default="")
    parser.add_argument("--edits", type=int, default=30)
    args = parser.parse_args()
    config, vlm, editor = builtin_scopeedit(args.overrides)
    P = {p: s.P_local.double() for p, s in editor.sites.items()}
    with tempfile.TemporaryDirectory() as tmp:
        records = write_edits(load_world(builtin_path()), "dev", Path(tmp))
        cases = load_records("world", Path(records), Path(records).parent)
        seen, picked = set(), []
        for case in cases:  # one case per fact: the first edits of a stream
            if case.fact_id not in seen:
                seen.add(case.fact_id)
                picked.append(case)
        picked = picked[: args.edits]
        edit_codes = [codes(editor, Probe(c.request.prompt, c.request.target, c.request.image)) for c in picked]
        kinds: dict[str, list[tuple[float, float]]] = {}
        for i, case in enumerate(picked):
            probes = {
                "t_gen (rephrase)": [case.rephrase],
                "m_gen (other image)": [case.image_rephrase],
                "text-only": list(case.text_transfer),
                "near-miss": list(case.near_miss),
                "other fact, same subject": list(case.other_fact),
                "t_loc": [case.loc],
                "m_loc": [case.m_loc],
            }
            for kind, items in probes.items():
                for probe in items:
                    if probe is not None:
                        kinds.setdefault(kind, []).append(reach(edit_codes[i], codes(editor, probe), P))
            for j, other in enumerate(edit_codes):
                if j != i:
                    same = "same" if picked[j].group == case.group else "another"
                    kinds.setdefault(f"another edit, {same} attribute", []).append(reach(edit_codes[i], other, P))
    label = args.overrides or "(preset)"
    print(f"{len(picked)} world:dev facts, {len(edit_codes[0])} decoder sites, overrides {label}")
    print(f"{'probe kind':32s} {'n':>5s} {'reach':>7s} {'|reach|':>8s} {'cos':>6s}")
    for kind, values in kinds.items():
        ratios = [r for r, _ in values]
        print(f"{kind:32s} {len(values):5d} {statistics.fmean(ratios):7.3f} "
              f"{statistics.fmean(abs(r) for r in ratios):8.3f} {statistics.fmean(c for _, c in values):6.3f}")


if __name__ == "__main__":
    main()
