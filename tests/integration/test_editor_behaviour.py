"""Editor behaviour on a tiny LLaVA: scope modes, text-only edits, anchors, transactions,
bad input, constant state size, M-ORE."""

from __future__ import annotations

import pytest
import torch
from tiny_models import build_tiny
from tiny_models import noise_image as image

from editscope.config import load_preset
from editscope.editors.base import EditRejected
from editscope.editors.recursive import MORE, ScopeEdit
from editscope.models import VisionLanguageModel
from editscope.types import EditRequest, Probe

PROMPT = "what color is the object in the image ?"


def shared_state(editor: ScopeEdit) -> list[torch.Tensor]:
    return [t.clone() for s in editor.sites.values() for t in (s.B_shared, s.P_shared)]


def full_state(editor) -> dict[str, torch.Tensor]:
    return editor.state_dict()


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_text_only_edit_writes_only_the_local_branch(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    before = shared_state(editor)
    result = editor.edit(EditRequest(prompt="who made it ?", target="green fish"))
    assert result.loss_after < result.loss_before
    assert result.gates == {}
    assert all(torch.equal(a, b) for a, b in zip(before, shared_state(editor)))
    assert any(s.B_local.abs().sum() > 0 for s in editor.sites.values())


def test_instance_scope_keeps_the_shared_branch_closed(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    before = shared_state(editor)
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(), scope="instance"))
    assert all(torch.equal(a, b) for a, b in zip(before, shared_state(editor)))


def test_broad_scope_forces_the_gate_open(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    result = editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(), scope="broad"))
    assert result.gates and all(v.g > 0.05 for v in result.gates.values())
    assert any(s.B_shared.abs().sum() > 0 for s in editor.sites.values())


def test_auto_scope_reports_gate_values(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    result = editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image()))
    assert result.gates
    for values in result.gates.values():
        assert -1.0 <= values.cos <= 1.0 and 0.0 <= values.support <= 1.0 and 0.0 <= values.g <= 1.0


def test_anchors_are_folded_into_the_local_preconditioners(vlm) -> None:
    config = load_preset("tiny")
    plain = ScopeEdit(vlm, config)
    plain.edit(EditRequest(prompt=PROMPT, target="green fish", image=image()))
    without = {p: s.P_local.clone() for p, s in plain.sites.items()}
    plain.remove()
    anchored = ScopeEdit(vlm, config)
    anchored.add_locality_anchors([Probe(prompt="what is this ?", answer="a dog", image=image(3))])
    result = anchored.edit(EditRequest(prompt=PROMPT, target="green fish", image=image()))
    active = {p for g in result.active_groups for p in anchored.groups[g]}
    assert active
    for path in active:
        assert not torch.allclose(anchored.sites[path].P_local, without[path])


def test_text_only_anchor_skips_the_projector(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    projector = {p: editor.sites[p].P_local.clone() for p in editor.groups["projector"]}
    anchor = Probe(prompt="who made it ?", answer="a cat")
    result = editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(), anchors=(anchor,)))
    assert "projector" in result.active_groups
    decoder = [p for g in result.active_groups if g != "projector" for p in editor.groups[g]]
    assert decoder and all(not torch.equal(editor.sites[p].P_local, torch.eye(12, device=vlm.device)) for p in decoder)
    assert any(not torch.equal(editor.sites[p].P_local, projector[p]) for p in projector)  # the edit wrote it


def test_non_finite_update_is_rejected_and_state_is_unchanged(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image()))
    before = full_state(editor)
    logits = vlm.logits(image(), PROMPT, "green fish")
    editor.config = editor.config.replace(eta=1e38)  # the next update overflows
    with pytest.raises(EditRejected, match="non-finite"):
        editor.edit(EditRequest(prompt="what is this ?", target="yellow house", image=image(1)))
    assert same_state(before, full_state(editor))
    assert torch.equal(logits, vlm.logits(image(), PROMPT, "green fish"))
    assert editor.edits_applied == 1


def test_state_size_does_not_grow_with_edits(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    sizes = []
    for i in range(4):
        editor.edit(EditRequest(prompt=PROMPT, target=f"red car {i}", image=image(i)))
        sizes.append((editor.state_bytes(), len(editor.state_dict())))
    assert len(set(sizes)) == 1


def test_empty_target_and_wrong_types_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="target"):
        EditRequest(prompt=PROMPT, target="   ")
    with pytest.raises(TypeError, match="prompt"):
        EditRequest(prompt=3, target="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scope"):
        EditRequest(prompt=PROMPT, target="x", scope="everywhere")  # type: ignore[arg-type]


def test_unreadable_image_is_a_clear_error_and_changes_nothing(vlm, tmp_path) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    before = full_state(editor)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=bad))
    with pytest.raises((ValueError, FileNotFoundError), match="missing.png"):
        editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=tmp_path / "missing.png"))
    assert same_state(before, full_state(editor))


def test_prompt_longer_than_the_context_is_refused(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    with pytest.raises(ValueError, match="context"):
        editor.edit(EditRequest(prompt="what is this ? " * 200, target="green fish", image=image()))
    assert editor.edits_applied == 0


def test_non_rgb_image_is_converted(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    result = editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0, mode="L")))
    assert result.loss_after < result.loss_before


def test_more_has_one_branch_and_edits(vlm) -> None:
    config = load_preset("tiny")
    editor = MORE(vlm, config)
    site = next(iter(editor.sites.values()))
    assert site.rank_local == config.rank and site.rank_shared == 0
    result = editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image()))
    assert result.gates == {} and result.loss_after < result.loss_before


def test_remove_restores_the_base_model(vlm) -> None:
    base = vlm.logits(image(), PROMPT, "green fish")
    editor = ScopeEdit(vlm, load_preset("tiny"))
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image()))
    assert not torch.equal(base, vlm.logits(image(), PROMPT, "green fish"))
    editor.remove()
    assert torch.equal(base, vlm.logits(image(), PROMPT, "green fish"))


def test_loading_state_saved_with_another_config_is_refused(vlm, tmp_path) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny"))
    editor.save(tmp_path)
    editor.remove()
    other = ScopeEdit(vlm, load_preset("tiny").replace(eta=0.5))
    with pytest.raises(ValueError, match="configuration"):
        other.load(tmp_path)


def test_stop_loss_ends_the_edit_once_absorbed(vlm) -> None:
    """With ``stop_loss`` the edit stops at the first step whose forward finds the loss below it
    (before writing); without it every edit takes ``steps_per_edit`` steps."""
    request = EditRequest(prompt=PROMPT, target="green fish", image=image())
    full = ScopeEdit(vlm, load_preset("tiny").replace(steps_per_edit=20)).edit(request)
    assert full.steps == 20
    model, processor = build_tiny("LlavaForConditionalGeneration")
    fresh = VisionLanguageModel(model, processor)
    stop = 0.5 * (full.loss_before + full.loss_after)  # reached on the way, so the early edit stops
    early = ScopeEdit(fresh, load_preset("tiny").replace(steps_per_edit=20, stop_loss=stop)).edit(request)
    assert early.loss_before == pytest.approx(full.loss_before)
    assert 1 <= early.steps < 20
    assert early.loss_after < stop


def test_the_stopping_step_runs_no_backward(vlm, monkeypatch) -> None:
    """An edit that stops after k steps runs k backward passes: the loss is tested before the
    backward of the step that finds it low enough."""
    request = EditRequest(prompt=PROMPT, target="green fish", image=image())
    editor = ScopeEdit(vlm, load_preset("tiny").replace(steps_per_edit=20))
    full = editor.edit(request)
    editor.reset()
    editor.config = editor.config.replace(stop_loss=0.5 * (full.loss_before + full.loss_after))
    calls = []
    backward = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or backward(*a, **k))
    early = editor.edit(request)
    assert 1 <= early.steps < 20
    assert len(calls) == early.steps


def test_an_edit_already_satisfied_writes_nothing(vlm) -> None:
    editor = ScopeEdit(vlm, load_preset("tiny").replace(stop_loss=1e6))
    before = full_state(editor)
    result = editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image()))
    assert result.steps == 0 and result.active_groups == () and editor.edits_applied == 1
    after = full_state(editor)
    counter = "editor.edits_applied"
    assert before.pop(counter) == 0 and after.pop(counter) == 1
    assert same_state(before, after)


@pytest.mark.parametrize("value", [-0.1, float("nan"), "0.1"])
def test_bad_stop_loss_is_refused(value) -> None:
    with pytest.raises(ValueError, match="stop_loss"):
        load_preset("tiny").replace(stop_loss=value)


def test_eta_growth_leaves_the_first_step_and_grows_the_later_ones() -> None:
    request = EditRequest(prompt=PROMPT, target="green fish", image=image())

    def state_after(**changes) -> dict:
        model, processor = build_tiny("LlavaForConditionalGeneration")
        editor = ScopeEdit(VisionLanguageModel(model, processor), load_preset("tiny").replace(**changes))
        editor.edit(request)
        return full_state(editor)

    assert same_state(state_after(steps_per_edit=1), state_after(steps_per_edit=1, eta_growth=3.0))
    plain, grown = state_after(steps_per_edit=3), state_after(steps_per_edit=3, eta_growth=3.0)
    moved = lambda state: sum(float(v.abs().sum()) for k, v in state.items() if k.endswith("B_local"))  # noqa: E731
    assert moved(grown) > 1.5 * moved(plain)


@pytest.mark.parametrize("value", [0.0, -2.0])
def test_bad_eta_growth_is_refused(value) -> None:
    with pytest.raises(ValueError, match="eta_growth"):
        load_preset("tiny").replace(eta_growth=value)
