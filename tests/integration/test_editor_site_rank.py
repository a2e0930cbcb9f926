"""``site_rank: fill`` gives each site a local rank of its whole input width beside the shared
basis; ``fixed`` (the method) gives every site ``rank_local``."""

from __future__ import annotations

import pytest
import torch
from tiny_models import noise_image as image

from editscope.config import load_preset
from editscope.editors.recursive import MORE, ScopeEdit
from editscope.types import EditRequest

PROMPT = "what color is the object in the image ?"
TARGET = "purple banana"


def test_fill_sizes_every_site_by_its_input_width(vlm) -> None:
    cfg = load_preset("tiny").replace(site_rank="fill")
    editor = ScopeEdit(vlm, cfg)
    widths = {p: s.base_layer.in_features for p, s in editor.sites.items()}
    assert len(set(widths.values())) > 1, "the tiny model should have sites of different widths"
    for path, site in editor.sites.items():
        assert site.rank_local == widths[path] - cfg.rank_shared, path
        assert site.rank_shared == cfg.rank_shared
        assert site.P_local.shape == (site.rank_local, site.rank_local)
        assert site.scaling == pytest.approx(cfg.scaling)
        rows = torch.cat([site.A_local, site.A_shared]).double()
        eye = torch.eye(widths[path], dtype=torch.float64, device=rows.device)
        assert torch.allclose(rows @ rows.T, eye, atol=1e-5)
    editor.remove()
    more = MORE(vlm, cfg)
    assert all(s.rank_local == s.base_layer.in_features for s in more.sites.values())
    more.remove()
    fixed = ScopeEdit(vlm, load_preset("tiny"))
    assert {s.rank_local for s in fixed.sites.values()} == {load_preset("tiny").rank_local}


def test_fill_leaves_the_model_unchanged_then_edits_and_round_trips(vlm, tmp_path) -> None:
    cfg = load_preset("tiny").replace(site_rank="fill")
    before = vlm.logits(image(), PROMPT, TARGET)
    editor = ScopeEdit(vlm, cfg)
    assert torch.equal(vlm.logits(image(), PROMPT, TARGET), before)
    editor.edit(EditRequest(prompt=PROMPT, target=TARGET, image=image()))
    assert vlm.score(image(), PROMPT, TARGET).token_accuracy == 1.0
    edited = vlm.logits(image(), PROMPT, TARGET)
    editor.save(tmp_path / "state")
    editor.remove()
    assert torch.equal(vlm.logits(image(), PROMPT, TARGET), before)
    restored = ScopeEdit(vlm, cfg)
    restored.load(tmp_path / "state")
    assert torch.equal(vlm.logits(image(), PROMPT, TARGET), edited)
    restored.remove()
    fixed = ScopeEdit(vlm, load_preset("tiny"))
    with pytest.raises(ValueError):
        fixed.load(tmp_path / "state")


def test_fill_without_room_for_the_local_basis_is_a_clear_error(vlm) -> None:
    cfg = load_preset("tiny").replace(site_rank="fill", rank_shared=10_000)
    with pytest.raises(ValueError, match="no room beside rank_shared"):
        ScopeEdit(vlm, cfg)
    assert not any("EditSite" in type(m).__name__ for m in vlm.model.modules())


def test_unknown_site_rank_is_refused() -> None:
    with pytest.raises(ValueError, match="site_rank"):
        load_preset("tiny").replace(site_rank="wide")
