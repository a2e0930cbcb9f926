"""The world, its renderer and its templates: deterministic, well-formed, no model files."""

from __future__ import annotations

import numpy as np
import pytest

from editscope.world import (
    ATTRIBUTES,
    FACTS,
    Augmentation,
    WorldConfig,
    build_world,
    fixed_render,
    render,
    split_subjects,
    user_prompt,
)
from editscope.world.templates import ATTRIBUTE_TEMPLATES, FACT_TEMPLATES, all_questions, fact_question


@pytest.fixture(scope="module")
def world():
    return build_world()


def test_world_is_deterministic_given_seed(world):
    again = build_world(WorldConfig())
    assert again.subjects == world.subjects
    assert again.value_pools == world.value_pools
    other = build_world(WorldConfig(seed=99))
    assert [s.name for s in other.subjects] != [s.name for s in world.subjects]


def test_world_size_names_and_facts(world):
    assert 200 <= len(world) <= 300
    names = [s.name for s in world.subjects]
    assert len(set(names)) == len(names)
    assert any(" " in n for n in names) and any(" " not in n for n in names)
    for s in world.subjects:
        assert set(s.facts) == set(FACTS)
        for fact, value in s.facts.items():
            assert value in world.value_pools[fact]
    looks = {tuple(s.look[a] for a in ATTRIBUTES) for s in world.subjects}
    assert len(looks) == len(world), "two subjects share a look"


def test_lookalikes_differ_in_exactly_one_attribute_and_every_fact(world):
    pairs = world.pairs()
    assert len(pairs) == len(world) // 2
    for i, j in pairs:
        a, b = world.subject(i), world.subject(j)
        assert a.lookalike == j and b.lookalike == i
        differing = [attr for attr in ATTRIBUTES if a.look[attr] != b.look[attr]]
        assert differing == [a.differs_in]
        assert all(a.facts[f] != b.facts[f] for f in FACTS)
    assert {world.subject(i).differs_in for i, _ in pairs} == set(ATTRIBUTES)


def test_splits_are_disjoint_and_keep_pairs_together(world):
    splits = split_subjects(world)
    seen: set[int] = set()
    for members in splits.values():
        assert not seen & set(members)
        seen |= set(members)
        for i in members:
            assert world.subject(i).lookalike in members
    assert seen == set(range(len(world)))


def test_renders_are_deterministic_and_augmentations_differ(world):
    s = world.subject(3)
    a = np.asarray(fixed_render(s, "heldout", 0, world.config.seed))
    b = np.asarray(fixed_render(s, "heldout", 0, world.config.seed))
    assert a.shape == (64, 64, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, np.asarray(fixed_render(s, "heldout", 1, world.config.seed)))
    assert not np.array_equal(a, np.asarray(fixed_render(s, "seen", 1, world.config.seed)))
    import random

    x = np.asarray(render(s, Augmentation.sample(random.Random(5))))
    y = np.asarray(render(s, Augmentation.sample(random.Random(5))))
    assert np.array_equal(x, y)


def test_lookalike_renders_differ(world):
    for i, j in world.pairs()[:12]:
        a = np.asarray(fixed_render(world.subject(i), "seen", 0, world.config.seed), dtype=np.int32)
        b = np.asarray(fixed_render(world.subject(j), "seen", 0, world.config.seed), dtype=np.int32)
        assert np.abs(a - b).mean() > 1.0


def test_background_colour_is_drawn(world):
    s = world.subject(0)
    corner = np.asarray(fixed_render(s, "seen", 0, world.config.seed))[0, 0]
    from editscope.world.world import BACKGROUNDS

    assert np.abs(corner.astype(int) - np.array(BACKGROUNDS[s.look["background"]])).max() <= 2


def test_template_splits_are_disjoint_and_mention_the_subject():
    for fact, splits in FACT_TEMPLATES.items():
        assert len(splits["train"]) >= 2 and len(splits["heldout"]) >= 1
        assert not set(splits["train"]) & set(splits["heldout"])
        for template in splits["train"] + splits["heldout"]:
            assert "{s}" in template
    for attribute, splits in ATTRIBUTE_TEMPLATES.items():
        assert not set(splits["train"]) & set(splits["heldout"])


def test_questions_and_prompt_format(world):
    s = world.subject(1)
    visual = fact_question(s, "city", "What city does {s} come from?", image=True)
    text = fact_question(s, "city", "What city does {s} come from?", image=False)
    assert visual.text == "What city does this come from?"
    assert text.text == f"What city does {s.name} come from?"
    assert visual.answer == text.answer == s.facts["city"]
    assert user_prompt(visual.text, True) == "USER: <image>\nWhat city does this come from? ASSISTANT:"
    assert user_prompt(text.text, False) == f"USER: {text.text} ASSISTANT:"
    questions = all_questions(s, "train")
    assert {q.kind for q in questions} == {"fact", "attribute"}
    assert all(q.image for q in questions if q.kind == "attribute")
    assert {q.image for q in questions if q.kind == "fact"} == {True, False}


def test_neighbours_are_one_attribute_away_and_never_the_lookalike() -> None:
    from editscope.world.world import ATTRIBUTES, build_world, neighbours, split_subjects

    world = build_world()
    splits = split_subjects(world)
    pool = set(splits["dev"]) | set(splits["locality"])
    found = 0
    for index in splits["dev"]:
        subject = world.subject(index)
        near = neighbours(world, index, "dev")
        for j, attribute in near:
            other = world.subject(j)
            assert j in pool and j != subject.lookalike
            assert [a for a in ATTRIBUTES if subject.look[a] != other.look[a]] == [attribute]
        expected = {j for j in pool if j != subject.lookalike
                    and sum(subject.look[a] != world.subject(j).look[a] for a in ATTRIBUTES) == 1}
        assert {j for j, _ in near} == expected
        found += len(near)
    assert found > 0  # the default world has such neighbours
