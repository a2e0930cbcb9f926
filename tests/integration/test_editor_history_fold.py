"""``history_fold``: "step" (the method) folds every step's code into ``P``; "edit" writes all
the steps of an edit with the ``P`` from before it and folds the last step's codes once, with
weight ``history_weight``."""

from __future__ import annotations

import pytest
import torch
from tiny_models import noise_image as image

from editscope.config import load_preset
from editscope.editors.recursive import MORE, ScopeEdit
from editscope.types import EditRequest

PROMPT = "what color is the object in the image ?"


def config(**changes):
    # no locality anchors: P holds the edits' own codes only
    return load_preset("tiny").replace(anchors_per_edit=0, **changes)


def edited_state(vlm, cls, cfg, targets=("green fish",)) -> dict[str, tuple[torch.Tensor, ...]]:
    editor = cls(vlm, cfg)
    for i, target in enumerate(targets):
        editor.edit(EditRequest(prompt=PROMPT, target=target, image=image(i), scope="broad"))
    state = {p: (s.B_local.clone(), s.B_shared.clone(), s.P_local.clone(), s.P_shared.clone())
             for p, s in editor.sites.items()}
    editor.remove()
    return state


@pytest.mark.parametrize("cls", [MORE, ScopeEdit])
def test_a_one_step_edit_is_the_same_under_both_folds(vlm, cls) -> None:
    step = edited_state(vlm, cls, config(steps_per_edit=1))
    edit = edited_state(vlm, cls, config(steps_per_edit=1, history_fold="edit"))
    assert any(bool(b.any()) for b, *_ in step.values())
    for path in step:
        for a, b in zip(step[path], edit[path]):
            assert torch.allclose(a, b, atol=1e-6), path


@pytest.mark.parametrize("cls", [MORE, ScopeEdit])
def test_edit_fold_writes_with_the_p_from_before_the_edit_and_folds_once(vlm, cls) -> None:
    light = edited_state(vlm, cls, config(steps_per_edit=3, history_fold="edit", history_weight=1.0))
    heavy = edited_state(vlm, cls, config(steps_per_edit=3, history_fold="edit", history_weight=50.0))
    per_step = edited_state(vlm, cls, config(steps_per_edit=3))
    folded_any = False
    for path in light:
        b_l, b_g, p_l, p_g = light[path]
        # the writes do not depend on how strongly the edit is folded afterwards
        assert torch.equal(b_l, heavy[path][0]) and torch.equal(b_g, heavy[path][1]), path
        # P^-1 = I + w z z^T / lambda: the fold of weight 50 is 50 times the fold of weight 1
        for light_p, heavy_p in ((p_l, heavy[path][2]), (p_g, heavy[path][3])):
            if not light_p.numel():
                continue
            eye = torch.eye(light_p.shape[0], dtype=torch.float64, device=light_p.device)
            light_moment = torch.linalg.inv(light_p.double()) - eye
            heavy_moment = torch.linalg.inv(heavy_p.double()) - eye
            assert torch.allclose(heavy_moment, 50 * light_moment, atol=1e-3 * (1 + float(heavy_moment.abs().max())))
            # one code, folded once: rank one
            values = torch.linalg.eigvalsh(light_moment)
            folded_any |= bool(values[-1] > 1e-6)
            assert float(values[-2].abs()) <= 1e-6 * max(1.0, float(values[-1])), path
    assert folded_any
    # under the method's per-step fold the later steps are damped: the writes differ
    assert any(not torch.allclose(light[p][0], per_step[p][0], atol=1e-6) for p in light)


def test_a_second_edit_keeps_off_a_heavily_folded_first(vlm) -> None:
    light = edited_state(vlm, ScopeEdit, config(history_fold="edit", history_weight=1.0), ("green fish", "red car"))
    heavy = edited_state(vlm, ScopeEdit, config(history_fold="edit", history_weight=1000.0), ("green fish", "red car"))
    assert any(not torch.allclose(light[p][0], heavy[p][0], atol=1e-6) for p in light)


@pytest.mark.parametrize("cls", [MORE, ScopeEdit])
def test_replace_under_edit_fold_matches_an_editor_that_saw_only_the_re_edit(vlm, cls) -> None:
    cfg = config(reedit="replace", history_fold="edit", history_weight=5.0, lambda_local=5.0, lambda_shared=5.0)
    editor = cls(vlm, cfg)
    for target in ("green fish", "red car"):
        editor.edit(EditRequest(prompt=PROMPT, target=target, image=image(0)))
    replaced = {p: (s.B_local.clone(), s.P_local.clone()) for p, s in editor.sites.items()}
    editor.remove()
    fresh = cls(vlm, cfg)
    fresh.edit(EditRequest(prompt=PROMPT, target="red car", image=image(0)))
    for path, site in fresh.sites.items():
        assert torch.allclose(site.B_local, replaced[path][0], atol=1e-3), path
        assert torch.allclose(site.P_local, replaced[path][1], atol=1e-3), path


def test_bad_history_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="history_fold"):
        load_preset("tiny").replace(history_fold="sometimes")
    with pytest.raises(ValueError, match="history_weight"):
        load_preset("tiny").replace(history_weight=0.0)


@pytest.mark.parametrize("codes", ["mean", "target", "all"])
def test_history_codes_fold_one_code_per_position_asked_for(vlm, codes) -> None:
    cfg = config(steps_per_edit=3, history_fold="edit", history_weight=10.0, history_codes=codes)
    inputs = vlm.encode(image(0), PROMPT, "green fish")
    n_target, n_all = inputs.target_positions.numel(), inputs.input_ids.shape[-1]
    assert 1 < n_target < cfg.rank  # M-ORE's one branch has rank rank_local + rank_shared
    expected = {"mean": 1, "target": n_target, "all": min(n_all, cfg.rank)}[codes]
    editor = MORE(vlm, cfg)
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
    ranks = []
    for path, site in editor.sites.items():
        if path in editor.groups.get("projector", ()):
            continue  # the projector folds every position of its input in every mode but "mean"
        eye = torch.eye(site.rank_local, dtype=torch.float64, device=site.P_local.device)
        moment = torch.linalg.inv(site.P_local.double()) - eye
        if float(moment.abs().max()) > 1e-6:
            ranks.append(int(torch.linalg.matrix_rank(moment, rtol=1e-6)))
    assert ranks and set(ranks) == {expected}


def test_history_sites_all_folds_every_site_the_forward_reached(vlm) -> None:
    unwritten = {}
    for sites in ("active", "all"):
        editor = MORE(vlm, config(history_fold="edit", history_sites=sites, top_k=1))
        editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
        unwritten[sites] = [
            bool(torch.equal(s.P_local, torch.eye(s.rank_local, device=s.P_local.device)))
            for s in editor.sites.values() if not s.B_local.any()
        ]
        editor.remove()
    assert unwritten["active"] and all(unwritten["active"])  # top_k 1: other groups' P untouched
    assert unwritten["all"] and not any(unwritten["all"])  # folded everywhere, written in one group


def test_position_codes_need_the_edit_fold() -> None:
    with pytest.raises(ValueError, match="history_fold"):
        load_preset("tiny").replace(history_codes="target")
    with pytest.raises(ValueError, match="history_fold"):
        load_preset("tiny").replace(history_sites="all")
    with pytest.raises(ValueError, match="history_codes"):
        load_preset("tiny").replace(history_fold="edit", history_codes="some")
