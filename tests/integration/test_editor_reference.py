"""The reference prior: ``fold_reference`` folds a reference set's input statistics into the
preconditioners (docs/method.md, "Reference prior"), before or between edits."""

from __future__ import annotations

import pytest
import torch
from tiny_models import noise_image as image

from editscope.config import load_preset
from editscope.editors.recursive import MORE, ScopeEdit
from editscope.editors.registry import build_editor
from editscope.models import VisionLanguageModel
from editscope.types import EditRequest, Probe

PROMPT = "what color is the object in the image ?"


REFERENCE = [
    Probe(PROMPT, "red", image(3)),
    Probe("what is this ?", "a round blue thing", image(4)),
    Probe("where do cats live ?", "in houses"),  # text only: the projector sees nothing
]


def site_inputs(vlm: VisionLanguageModel, editor, probes) -> dict[str, list[torch.Tensor]]:
    """Every site's input (positions x d_in) for each probe, read with plain hooks."""
    seen: dict[str, list[torch.Tensor]] = {p: [] for p in editor.sites}
    handles = [
        site.base_layer.register_forward_pre_hook(
            lambda m, args, p=path: seen[p].append(args[0].detach().reshape(-1, args[0].shape[-1]).double())
        )
        for path, site in editor.sites.items()
    ]
    try:
        with torch.no_grad():
            for probe in probes:
                vlm.forward(vlm.encode(probe.image, probe.prompt, probe.answer))
    finally:
        for h in handles:
            h.remove()
    return seen


def test_fold_reference_folds_the_weighted_second_moment(vlm) -> None:
    cfg = load_preset("tiny").replace(lambda_local=3.0, lambda_shared=2.0)
    editor = ScopeEdit(vlm, cfg)
    inputs = site_inputs(vlm, editor, REFERENCE)
    editor.fold_reference(REFERENCE, weight=50.0)
    for path, site in editor.sites.items():
        for basis, p, lam in ((site.A_local, site.P_local, 3.0), (site.A_shared, site.P_shared, 2.0)):
            if basis.shape[0] == 0:
                continue
            # the mean over the probes that reached the site (the projector sees two of three)
            moments = [(x @ basis.double().T).T @ (x @ basis.double().T) / x.shape[0] for x in inputs[path]]
            moment = 50.0 / len(REFERENCE) * sum(moments)
            eye = torch.eye(basis.shape[0], dtype=torch.float64, device=basis.device)
            expected = lam * torch.linalg.inv(lam * eye + moment)
            assert torch.allclose(p.double(), expected, atol=1e-5, rtol=1e-4), path
            assert not torch.allclose(p.double(), eye, atol=1e-3), f"{path}: the prior changed nothing"


def test_fold_reference_leaves_outputs_unchanged_and_round_trips(vlm) -> None:
    editor = MORE(vlm, load_preset("tiny"))
    probe = vlm.encode(image(5), PROMPT, "blue")
    with torch.no_grad():
        before = vlm.forward(probe).clone()
    editor.fold_reference(REFERENCE, weight=10.0)
    with torch.no_grad():
        assert torch.equal(vlm.forward(probe), before)  # B is still zero: only P moved
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
    state = editor.state_dict()
    editor.remove()
    again = MORE(vlm, load_preset("tiny"))
    again.load_state_dict(state)
    for path, site in again.sites.items():
        assert torch.equal(site.P_local, state[f"{path}.P_local"])


def test_the_prior_damps_edits_along_the_reference_directions(vlm) -> None:
    request = EditRequest(prompt=PROMPT, target="green fish", image=image(0))
    cfg = load_preset("tiny").replace(anchors_per_edit=0, include_projector=False)
    probe = vlm.encode(*[(p.image, p.prompt, p.answer) for p in REFERENCE[:1]][0])
    with torch.no_grad():
        base = vlm.forward(probe).clone()
    changes = []
    for weight in (None, 1e4):
        editor = MORE(vlm, cfg)
        if weight is not None:
            editor.fold_reference(REFERENCE, weight=weight)
        editor.edit(request)
        with torch.no_grad():
            changes.append(float((vlm.forward(probe) - base).norm()))
        editor.remove()
    # the reference probe itself moves far less once its directions are in P
    assert changes[1] < 0.5 * changes[0], changes


@pytest.mark.parametrize("weight", [0, -1.0, float("nan"), True])
def test_bad_weight_is_refused_before_anything_changes(vlm, weight) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    with pytest.raises(ValueError, match="reference weight"):
        editor.fold_reference(REFERENCE, weight=weight)
    assert all(torch.equal(s.P_local, torch.eye(s.rank_local, device=s.P_local.device)) for s in editor.sites.values())


def test_empty_reference_or_bad_probe_is_refused_and_changes_nothing(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    with pytest.raises(ValueError, match="empty"):
        editor.fold_reference([], weight=1.0)
    with pytest.raises(ValueError, match="target is empty"):
        editor.fold_reference([REFERENCE[0], Probe(PROMPT, "  ", image(1))], weight=1.0)
    assert all(torch.equal(s.P_local, torch.eye(s.rank_local, device=s.P_local.device)) for s in editor.sites.values())


def test_reference_through_build_editor_and_the_warning_without_one(vlm) -> None:
    cfg = load_preset("tiny").replace(reference_weight=10.0)
    built = build_editor("more", vlm, cfg, reference=REFERENCE)
    p_built = {p: s.P_local.clone() for p, s in built.sites.items()}
    built.remove()
    later = MORE(vlm, cfg)
    later.fold_reference(REFERENCE, 10.0)
    assert all(torch.equal(p_built[p], s.P_local) for p, s in later.sites.items())
    later.remove()
    with pytest.raises(ValueError, match=r"no prior section \(prior: null\)"):
        build_editor("more", vlm, load_preset("tiny"), reference=REFERENCE)
    bare = MORE(vlm, cfg)
    with pytest.warns(UserWarning, match="no reference set was folded"):
        bare.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))


def test_a_bad_reference_at_construction_leaves_the_model_unwrapped(vlm) -> None:
    cfg = load_preset("tiny").replace(reference_weight=10.0)
    with pytest.raises(ValueError, match="target is empty"):
        build_editor("more", vlm, cfg, reference=[Probe(PROMPT, " ", image(1))])
    with pytest.raises(ValueError, match="no prior section"):
        build_editor("scopeedit", vlm, load_preset("tiny"), reference=REFERENCE)
    MORE(vlm, cfg)  # the sites of the failed editors were taken out again


def test_reset_forgets_the_edits_and_keeps_the_prior(vlm) -> None:
    cfg = load_preset("tiny").replace(reference_weight=10.0)
    editor = build_editor("scopeedit", vlm, cfg, reference=REFERENCE)
    prior = {p: (s.P_local.clone(), s.P_shared.clone()) for p, s in editor.sites.items()}
    initial = editor.state_dict()
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
    assert any(not torch.equal(s.P_local, prior[p][0]) for p, s in editor.sites.items())
    editor.reset()
    for path, site in editor.sites.items():
        assert torch.equal(site.P_local, prior[path][0]) and torch.equal(site.P_shared, prior[path][1])
        assert not site.B_local.any() and not site.B_shared.any()
    editor.remove()
    loaded = ScopeEdit(vlm, cfg)  # an initial state with the prior, loaded: reset returns to it
    loaded.load_state_dict(initial)
    loaded.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
    loaded.reset()
    assert all(torch.equal(s.P_local, prior[p][0]) for p, s in loaded.sites.items())
    loaded.remove()
    plain = ScopeEdit(vlm, load_preset("tiny"))
    plain.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
    plain.reset()
    assert all(torch.equal(s.P_local, torch.eye(s.rank_local, device=s.P_local.device)) for s in plain.sites.values())


@pytest.mark.parametrize("name", ["scopeedit", "more"])
def test_a_new_store_folds_the_prior_as_build_editor_does(tmp_path, name) -> None:
    """The store hands a new store's editor its reference set through the registry
    (``registry.give_reference``): its initial state is the one ``build_editor(reference=)``
    gives, bit for bit."""
    import json

    import yaml
    from store_support import make_images, save_tiny_checkpoint, write_preset

    from editscope.editors.reference import load_reference
    from editscope.models import load
    from editscope.store import EditStore

    base, images = save_tiny_checkpoint(tmp_path / "base"), make_images(tmp_path / "images")
    cfg = load_preset(str(write_preset(tmp_path))).replace(reference_weight=3.0, reference_size=2)
    preset = tmp_path / "prior.yaml"
    preset.write_text(yaml.safe_dump(cfg.to_dict()))
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps([{"prompt": PROMPT, "answer": "red", "image": str(images[0].relative_to(tmp_path))},
                                     {"prompt": "where do cats live ?", "answer": "in houses"},
                                     {"prompt": "not used", "answer": "beyond size"}]))
    with EditStore.init(tmp_path / "store", base, str(preset), editor=name, reference=reference) as store:
        stored = store.editor.state_dict()
    built = build_editor(name, load(str(base)), cfg, reference=load_reference(reference, base, 2))
    state = built.state_dict()
    assert built.prior_in_p and sorted(state) == sorted(stored)
    assert all(torch.equal(state[k], stored[k]) for k in state)
    assert any(not torch.equal(s.P_local, torch.eye(s.rank_local)) for s in built.sites.values())
