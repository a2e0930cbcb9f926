"""``rehearse``: after each edit the editor re-checks that many earlier facts (the ones checked or
edited longest ago) and writes again, as a re-edit, each whose loss is at or above ``stop_loss``.

On the shipped built-in model (a tiny random model never brings a loss near ``stop_loss``). The
wear of many later edits is simulated by taking every write out of ``B``; the tests use
``reedit: release`` (codes remembered, no writes), so that taking the writes out stays consistent
with what the editor remembers."""

from __future__ import annotations

import pytest
import torch
from tiny_models import TEST_DEVICE
from tiny_models import noise_image as noise

from editscope import EditRequest, ScopeEdit, load, load_preset, load_reference
from editscope.editors.recursive import WRITES, expand_write
from editscope.editors.registry import build_editor
from editscope.world import FACTS, fact_question, fact_templates, fixed_render, load_world, split_subjects


@pytest.fixture(scope="module")
def setup():
    world, vlm = load_world(), load("builtin", device=TEST_DEVICE)
    # full rewrites: the wear below takes every write out, more than a capped top-up restores
    config = load_preset("builtin").replace(reedit="release", rehearse=1, rehearse_write="replace", rehearse_steps=0)
    reference = load_reference("world", "builtin", config.reference_size)
    dev = split_subjects(world)["dev"]
    requests = []
    for k in range(3):
        subject, fact = world.subject(dev[k]), FACTS[k % len(FACTS)]
        question = fact_question(subject, fact, fact_templates(fact, "train")[0], image=True)
        image = fixed_render(subject, "heldout", 0, world.config.seed)
        value = next(v for v in world.value_pools[fact] if v != subject.facts[fact])
        requests.append(EditRequest(prompt=question.text, target=value, image=image))
    return vlm, config, reference, requests


def held(vlm, request: EditRequest) -> bool:
    return vlm.score(request.image, request.prompt, request.target).token_accuracy == 1.0


def wear_away(editor) -> None:
    """What many later edits would do to earlier facts, in one go: every write taken out."""
    with torch.no_grad():
        for site in editor.sites.values():
            site.B_local.zero_()
            site.B_shared.zero_()


@pytest.mark.parametrize("rehearse", [0, 1])
def test_a_worn_away_fact_is_written_again_by_the_next_edit(setup, rehearse) -> None:
    vlm, config, reference, (first, second, _) = setup
    editor = build_editor("scopeedit", vlm, config.replace(rehearse=rehearse), reference=reference)
    try:
        editor.edit(first)
        assert held(vlm, first)
        wear_away(editor)
        assert not held(vlm, first)
        result = editor.edit(second)
        assert result.rehearsed == rehearse
        assert held(vlm, first) == bool(rehearse)
        assert held(vlm, second)
    finally:
        editor.remove()


def test_a_check_looser_than_the_loss_leaves_the_fact_alone(setup) -> None:
    vlm, config, reference, (first, second, _) = setup
    editor = build_editor("scopeedit", vlm, config, reference=reference)
    try:
        editor.edit(first)
        wear_away(editor)
        worn = float(editor._loss(vlm.encode(first.image, first.prompt, first.target)))
        assert worn > config.stop_loss
        editor.config = config.replace(rehearse_loss=2 * worn)
        assert editor.edit(second).rehearsed == 0
        assert not held(vlm, first)
        editor.config = config.replace(rehearse_loss=worn / 2)
        assert editor.edit(second).rehearsed == 1
        assert held(vlm, first)
    finally:
        editor.remove()


def test_held_facts_are_checked_round_robin_and_not_written(setup) -> None:
    vlm, config, reference, requests = setup
    editor = build_editor("more", vlm, config, reference=reference)
    try:
        results = [editor.edit(r) for r in requests]
        assert all(held(vlm, r) for r in requests)
        assert [r.rehearsed for r in results] == [0, 0, 0]  # checked, all held, nothing written
        # the first fact was checked at the second edit, the second at the third: once every
        # write is worn away, the next edit rewrites the first, the one after it the second
        wear_away(editor)
        assert editor.edit(requests[2]).rehearsed == 1
        assert held(vlm, requests[0])
        assert not held(vlm, requests[1])  # its turn is next
        assert editor.edit(requests[2]).rehearsed == 1
        assert held(vlm, requests[1])
    finally:
        editor.remove()


def test_the_queue_round_trips_and_reset_empties_it(setup, tmp_path) -> None:
    vlm, config, reference, (first, second, third) = setup
    editor = build_editor("scopeedit", vlm, config, reference=reference)
    for request in (first, second):
        editor.edit(request)
    editor.save(tmp_path / "state")
    wear_away(editor)
    continued = editor.edit(third)
    after = vlm.logits(first.image, first.prompt, first.target)
    editor.reset()
    assert editor.edit(first).rehearsed == 0  # the queue went with the edits: nothing to check
    editor.remove()

    restored = ScopeEdit(vlm, config)
    try:
        restored.load(tmp_path / "state")
        wear_away(restored)
        again = restored.edit(third)
        assert again.rehearsed == continued.rehearsed == 1
        assert torch.equal(vlm.logits(first.image, first.prompt, first.target), after)
    finally:
        restored.remove()


def test_a_state_with_a_broken_rehearsal_entry_is_refused(vlm) -> None:
    config = load_preset("tiny").replace(reedit="replace", stop_loss=0.1, rehearse=1)
    editor = ScopeEdit(vlm, config)
    editor.edit(EditRequest(prompt="what color is the object in the image ?", target="green fish", image=noise(0)))
    state = editor.state_dict()
    assert any(k.startswith("rehearsal/") for k in state)
    del state[next(k for k in state if k.startswith("rehearsal/") and k.endswith(".target_ids"))]
    with pytest.raises(ValueError, match=r"rehearsal entry 0 \(.*\) is incomplete"):
        editor.load_state_dict(state)


@pytest.mark.parametrize("changes", [{"reedit": "protect"}, {"stop_loss": 0.0}])
def test_rehearse_needs_remembered_facts_and_a_stopping_loss(changes) -> None:
    with pytest.raises(ValueError, match="rehearsal needs"):
        load_preset("builtin").replace(rehearse=1, **changes)


def test_a_topup_writes_on_top_and_remembers_both_writes(setup) -> None:
    """``rehearse_write: topup``: the worn fact's earlier write is not taken out; what the
    rehearsal writes joins it in memory (one write per site, summed), and its codes are added to
    the fact's codes, at most ``rehearse_steps`` steps' worth."""
    vlm, config, reference, (first, second, _) = setup
    steps = 2
    config = config.replace(reedit="replace", rehearse_write="topup", rehearse_steps=steps)
    editor = build_editor("scopeedit", vlm, config, reference=reference)
    try:
        editor.edit(first)
        key_first = next(iter(editor.options["reedit"].facts))
        before = {(w.path, w.name): w.value.clone() for w in editor.options["reedit"].facts[key_first].writes}
        codes_before = len(editor.options["reedit"].facts[key_first].codes)
        wear_away(editor)
        assert editor.edit(second).rehearsed == 1
        key_second = next(k for k in editor.options["reedit"].facts if k != key_first)
        remembered = {}
        for key in (key_first, key_second):
            for write in editor.options["reedit"].facts[key].writes:
                path, branch = write.path, write.name
                shape = getattr(editor.sites[path], branch).shape
                full = expand_write(write.value, shape)
                remembered[(path, branch)] = remembered.get((path, branch), 0) + full
        for (path, branch), value in before.items():  # B now holds the second's write and the top-up
            remembered[(path, branch)] = remembered[(path, branch)] - expand_write(
                value, getattr(editor.sites[path], branch).shape
            )
        for path, site in editor.sites.items():
            for branch in WRITES:
                held_now = getattr(site, branch).detach()
                expected = remembered.get((path, branch), torch.zeros_like(held_now))
                assert torch.allclose(held_now, expected, atol=1e-5), (path, branch)
        codes_after = len(editor.options["reedit"].facts[key_first].codes)
        per_group = max(len(paths) for paths in editor.groups.values())
        # each step folds one code per written site: the local branch of top_k groups, the shared
        # branch of at most shared_layers of them
        assert 0 < codes_after - codes_before <= steps * (config.top_k + config.shared_layers) * per_group
        # a state with a topped-up fact round-trips (one write per site and fact)
        saved = {k[len("reedit/"):]: v for k, v in editor.state_dict().items() if k.startswith("reedit/")}
        restored = editor.options["reedit"].read_state(saved)
        assert [(p, b) for p, b, _ in restored[key_first].entries()] == \
            [(p, b) for p, b, _ in editor.options["reedit"].facts[key_first].entries()]
    finally:
        editor.remove()


def test_an_unknown_rehearsal_write_is_refused() -> None:
    with pytest.raises(ValueError, match="rehearsal.write must be one of"):
        load_preset("builtin").replace(rehearse_write="append")
