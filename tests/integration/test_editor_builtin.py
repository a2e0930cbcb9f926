"""ScopeEdit on the shipped built-in model: one edit changes the edited answer and leaves an
unrelated subject's answer alone."""

from __future__ import annotations

import pytest
from tiny_models import TEST_DEVICE

from editscope import EditRequest, load, load_preset, load_reference
from editscope.editors.registry import build_editor
from editscope.world import FACTS, fact_question, fact_templates, fixed_render, load_world, split_subjects


@pytest.fixture(scope="module")
def world_and_vlm():
    return load_world(), load("builtin", device=TEST_DEVICE)


def test_single_edits_change_the_answer_and_not_an_unrelated_one(world_and_vlm) -> None:
    """Four edits of four dev subjects, each on the unedited model (the preset with its
    reference prior): every edit lowers its loss and leaves an unrelated subject's answer alone;
    at least three of the four give the new value by greedy generation."""
    world, vlm = world_and_vlm
    splits = split_subjects(world)
    config = load_preset("builtin")
    editor = build_editor("scopeedit", vlm, config, reference=load_reference("world", "builtin", config.reference_size))
    initial = editor.state_dict()
    other = world.subject(splits["locality"][0])
    landed = 0
    for k in range(4):
        subject, fact = world.subject(splits["dev"][k]), FACTS[k % len(FACTS)]
        template = fact_templates(fact, "train")[0]
        question = fact_question(subject, fact, template, image=True)
        other_question = fact_question(other, fact, template, image=True)
        image = fixed_render(subject, "heldout", 0, world.config.seed)
        other_image = fixed_render(other, "heldout", 0, world.config.seed)
        new_value = next(v for v in world.value_pools[fact] if v not in (subject.facts[fact], other.facts[fact]))
        editor.load_state_dict(initial)  # back to the unedited model, prior included
        other_before = vlm.answer(other_image, other_question.text)
        assert vlm.answer(image, question.text) != new_value

        result = editor.edit(EditRequest(prompt=question.text, target=new_value, image=image))

        assert result.loss_after < 0.5 * result.loss_before, k
        landed += vlm.answer(image, question.text) == new_value
        assert vlm.answer(other_image, other_question.text) == other_before, k
    assert landed >= 3
