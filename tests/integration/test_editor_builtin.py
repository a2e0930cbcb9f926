"""ScopeEdit on the shipped built-in model: one edit changes the edited answer and leaves an
unrelated subject's answer alone."""

from __future__ import annotations

import pytest

from editscope import EditRequest, ScopeEdit, load, load_preset
from editscope.world import FACTS, fact_question, fact_templates, fixed_render, load_world, split_subjects


@pytest.fixture(scope="module")
def world_and_vlm():
    return load_world(), load("builtin")


def test_one_edit_changes_the_answer_and_not_an_unrelated_one(world_and_vlm) -> None:
    world, vlm = world_and_vlm
    splits = split_subjects(world)
    subject, other = world.subject(splits["dev"][0]), world.subject(splits["locality"][0])
    fact = FACTS[0]
    template = fact_templates(fact, "train")[0]
    question = fact_question(subject, fact, template, image=True)
    other_question = fact_question(other, fact, template, image=True)
    image = fixed_render(subject, "heldout", 0, world.config.seed)
    other_image = fixed_render(other, "heldout", 0, world.config.seed)
    new_value = next(v for v in world.value_pools[fact] if v not in (subject.facts[fact], other.facts[fact]))

    other_before = vlm.answer(other_image, other_question.text)
    assert vlm.answer(image, question.text) != new_value

    editor = ScopeEdit(vlm, load_preset("builtin"))
    result = editor.edit(EditRequest(prompt=question.text, target=new_value, image=image))

    assert result.loss_after < result.loss_before
    assert vlm.answer(image, question.text) == new_value
    assert vlm.answer(other_image, other_question.text) == other_before
