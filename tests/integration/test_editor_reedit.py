"""The re-edit rule (``reedit``): "release" takes a fact's earlier codes out of the
preconditioners before the fact is edited again, "replace" also takes its earlier writes out of
``B``; "protect" (the method) keeps both."""

from __future__ import annotations

import pytest
import torch
from tiny_models import noise_image as image

from editscope.config import load_preset
from editscope.core.linalg import sherman_morrison
from editscope.editors.recursive import MORE, ScopeEdit, compact_write, expand_write
from editscope.editors.scopeedit.plugin import read_index
from editscope.editors.scopeedit.reedit import Branch
from editscope.types import EditRequest

PROMPT = "what color is the object in the image ?"


def memory(editor) -> dict:
    """The facts the editor's re-edit rule remembers."""
    return editor.options["reedit"].facts


def saved_index(state) -> list[dict]:
    return read_index({"index": state["reedit/index"]}, "reedit")["facts"]


def config(rule: str, **changes):
    # no locality anchors, so that P holds the edits' own codes only
    return load_preset("tiny").replace(reedit=rule, anchors_per_edit=0, **changes)


def test_release_leaves_only_the_latest_edit_of_a_fact_in_p(vlm) -> None:
    editor = ScopeEdit(vlm, config("release", lambda_local=5.0, lambda_shared=5.0))
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
    editor.edit(EditRequest(prompt=PROMPT, target="red car", image=image(0)))  # the same fact again
    assert len(memory(editor)) == 1
    (folded,) = memory(editor).values()
    expected = {p: torch.eye(s.rank_local, dtype=torch.float64, device=s.P_local.device) for p, s in editor.sites.items()}
    for code in folded.codes:
        if code.branch is Branch.LOCAL:
            expected[code.path] = sherman_morrison(expected[code.path], code.code.double(), 5.0)
    for path, site in editor.sites.items():
        assert torch.allclose(site.P_local.double(), expected[path], atol=1e-4), path


def test_protect_keeps_both_edits_in_p(vlm) -> None:
    released = ScopeEdit(vlm, config("release"))
    for target in ("green fish", "red car"):
        released.edit(EditRequest(prompt=PROMPT, target=target, image=image(0)))
    p_released = {p: s.P_local.clone() for p, s in released.sites.items()}
    released.remove()
    protected = ScopeEdit(vlm, config("protect"))
    for target in ("green fish", "red car"):
        protected.edit(EditRequest(prompt=PROMPT, target=target, image=image(0)))
    assert "reedit" not in protected.options  # the method's rule: no memory at all
    # the protected P has folded both edits: smaller along the fact's directions
    assert sum(float(s.P_local.trace()) for s in protected.sites.values()) < sum(
        float(p.trace()) for p in p_released.values()
    )


def test_another_image_or_prompt_is_another_fact(vlm) -> None:
    editor = MORE(vlm, config("release"))
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(1)))
    editor.edit(EditRequest(prompt="what is this ?", target="green fish", image=image(0)))
    editor.edit(EditRequest(prompt=PROMPT, target="blue bird", image=image(0)))
    assert len(memory(editor)) == 3


def test_memory_keeps_the_latest_facts_only(vlm) -> None:
    editor = ScopeEdit(vlm, config("release", reedit_memory=2))
    for seed in range(3):
        editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(seed)))
    assert len(memory(editor)) == 2
    assert len({fact["key"] for fact in saved_index(editor.state_dict())}) == 2


@pytest.mark.parametrize("rule", ["release", "replace"])
def test_memory_round_trips_through_a_file(vlm, tmp_path, rule) -> None:
    editor = ScopeEdit(vlm, config(rule))
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
    editor.edit(EditRequest(prompt=PROMPT, target="blue bird", image=image(1)))
    editor.save(tmp_path)
    saved = list(memory(editor))
    editor.edit(EditRequest(prompt=PROMPT, target="red car", image=image(0)))
    expected = vlm.logits(image(0), PROMPT, "red car")
    editor.remove()
    again = ScopeEdit(vlm, config(rule))
    again.load(tmp_path)
    assert list(memory(again)) == saved
    again.edit(EditRequest(prompt=PROMPT, target="red car", image=image(0)))
    assert torch.equal(expected, vlm.logits(image(0), PROMPT, "red car"))


@pytest.mark.parametrize("rule", ["release", "replace"])
def test_a_rejected_re_edit_changes_neither_state_nor_memory(vlm, rule) -> None:
    editor = ScopeEdit(vlm, config(rule))
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
    before = editor.state_dict()
    editor.config = editor.config.replace(eta=1e38)
    with pytest.raises(Exception, match="non-finite"):
        editor.edit(EditRequest(prompt=PROMPT, target="red car", image=image(0)))
    after = editor.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("cls", [MORE, ScopeEdit])
def test_replace_takes_the_earlier_write_out_of_b(vlm, cls) -> None:
    # without anchors the second edit of the fact starts from B = 0 and P close to I, which is
    # where an editor that only ever saw the second edit starts
    cfg = config("replace", lambda_local=5.0, lambda_shared=5.0)
    editor = cls(vlm, cfg)
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
    assert any(bool(s.B_local.any()) for s in editor.sites.values())
    editor.edit(EditRequest(prompt=PROMPT, target="red car", image=image(0)))
    replaced = {p: (s.B_local.clone(), s.B_shared.clone()) for p, s in editor.sites.items()}
    (folded,) = memory(editor).values()
    writes = {(write.path, write.name): write.value for write in folded.writes}
    assert writes
    for path, site in editor.sites.items():  # the memory holds exactly what is in B: one write
        for branch in ("B_local", "B_shared"):
            stored = expand_write(writes[(path, branch)], getattr(site, branch).shape) \
                if (path, branch) in writes else torch.zeros_like(getattr(site, branch))
            assert torch.allclose(getattr(site, branch), stored, atol=1e-6), (path, branch)
    editor.remove()
    fresh = cls(vlm, cfg)
    fresh.edit(EditRequest(prompt=PROMPT, target="red car", image=image(0)))
    for path, site in fresh.sites.items():
        assert torch.allclose(site.B_local, replaced[path][0], atol=1e-3), path
        assert torch.allclose(site.B_shared, replaced[path][1], atol=1e-3), path


def test_release_keeps_the_earlier_write_in_b(vlm) -> None:
    editor = ScopeEdit(vlm, config("release", lambda_local=5.0))
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
    first = {p: s.B_local.clone() for p, s in editor.sites.items()}
    editor.edit(EditRequest(prompt=PROMPT, target="red car", image=image(0)))
    (folded,) = memory(editor).values()
    assert not folded.writes and {code.branch for code in folded.codes} <= {Branch.LOCAL, Branch.SHARED}
    fresh_b = {p: s.B_local.clone() for p, s in editor.sites.items()}
    editor.remove()
    only_second = ScopeEdit(vlm, config("release", lambda_local=5.0))
    only_second.edit(EditRequest(prompt=PROMPT, target="red car", image=image(0)))
    # B holds both writes: it differs from the second edit alone by about the first write
    moved = [p for p in first if bool(first[p].any())]
    assert moved and any(
        not torch.allclose(fresh_b[p], only_second.sites[p].B_local, atol=1e-3) for p in moved
    )


@pytest.mark.parametrize("damage", ["cut", "wide_factors"])
def test_a_damaged_write_in_a_saved_memory_is_refused(vlm, tmp_path, damage) -> None:
    from safetensors.torch import load_file, save_file

    editor = ScopeEdit(vlm, config("replace"))
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
    editor.save(tmp_path)
    (state_file,) = [f for f in tmp_path.iterdir() if f.suffix == ".safetensors"]
    state = load_file(state_file)
    i, j, path = next((i, j, path) for i, fact in enumerate(saved_index(state))
                      for j, (path, branch) in enumerate(fact["entries"]) if branch == "B_local")
    name = f"reedit/{i}.{j}"
    d_out, r = editor.sites[path].B_local.shape
    if damage == "cut":
        state[name] = torch.zeros(d_out, r - 1)
    else:  # "factors" as wide as the matrix itself
        state[name] = torch.zeros(d_out + r, r)
    save_file(state, state_file)
    editor.remove()
    again = ScopeEdit(vlm, config("replace"))
    with pytest.raises(ValueError, match="write of shape"):
        again.load(tmp_path)


def test_unknown_rule_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="reedit"):
        load_preset("tiny").replace(reedit="forget")


def test_state_saved_before_the_rule_existed_still_loads(vlm, tmp_path) -> None:
    import json

    editor = ScopeEdit(vlm, load_preset("tiny"))
    editor.edit(EditRequest(prompt=PROMPT, target="green fish", image=image(0)))
    editor.save(tmp_path)
    info = json.loads((tmp_path / "editor_config.json").read_text())
    info["config"] = load_preset("tiny").to_flat()  # the flat form of earlier versions
    for key in ("reedit", "reedit_memory"):
        del info["config"][key]
    (tmp_path / "editor_config.json").write_text(json.dumps(info))
    expected = vlm.logits(image(0), PROMPT, "green fish")
    editor.remove()
    again = ScopeEdit(vlm, load_preset("tiny"))
    again.load(tmp_path)
    assert torch.equal(expected, vlm.logits(image(0), PROMPT, "green fish"))
    again.remove()
    released = ScopeEdit(vlm, load_preset("tiny").replace(reedit="release"))
    with pytest.raises(ValueError, match="configuration"):
        released.load(tmp_path)


def test_a_low_rank_write_is_kept_as_factors_and_restored() -> None:
    generator = torch.Generator().manual_seed(0)
    low = torch.randn(300, 3, generator=generator) @ torch.randn(3, 40, generator=generator)
    kept = compact_write(low)
    assert kept.shape == (340, 3)  # [U; V] of rank 3 instead of 300 x 40
    assert torch.allclose(expand_write(kept, low.shape), low, atol=1e-4)
    full = torch.randn(300, 40, generator=generator)
    assert compact_write(full) is full  # no smaller as factors: kept as it is
    assert expand_write(full, full.shape) is full
