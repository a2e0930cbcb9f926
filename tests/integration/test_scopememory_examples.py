"""Scope by example in ScopeMemory on the built-in model: a ``never`` example keeps its answer,
an ``also`` example follows the edit, an inseparable ``never`` example is refused with nothing
written, and the thresholds' caps survive a state round trip."""

from __future__ import annotations

import pytest
import torch
from tiny_models import TEST_DEVICE, build_tiny
from tiny_models import noise_image as image

from editscope.editors.registry import build_editor
from editscope.editors.scopememory import ScopeConflict, ScopeMemory, load_memory_preset
from editscope.editors.scopememory.router import NO_SLOT
from editscope.types import EditRequest


@pytest.fixture(scope="module")
def world():
    from editscope.world import builtin_path, load_world

    return load_world(builtin_path())


@pytest.fixture(scope="module")
def records(world):
    from editscope.world.edits import make_records

    return make_records(world, "dev", 4)


@pytest.fixture()
def builtin():
    import editscope

    return editscope.load("builtin", device=str(TEST_DEVICE))


def editor_on(vlm) -> ScopeMemory:
    from editscope.editors.reference import load_reference

    return build_editor("scopememory", vlm, load_memory_preset("builtin"), reference=load_reference("world", "builtin", 32))


def render(world, record, index: int, lookalike: bool = False):
    """A held-out render of the record's subject (or of its look-alike) beyond the scored ones."""
    from editscope.world.render import fixed_render

    subject = world.subject(record["subject_index"])
    if lookalike:
        subject = world.subject(subject.lookalike)
    return fixed_render(subject, "heldout", index, world.config.seed)


def request(world, record, **examples) -> EditRequest:
    return EditRequest(prompt=record["src"], target=record["alt"], image=render(world, record, 0), **examples)


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_never_example_keeps_its_answer(builtin, world, records) -> None:
    record = records[0]
    prompt = record["src"]
    # an image of the subject the edit spreads to, then named as a negative
    renders = {i: render(world, record, i) for i in range(1, 8)}
    base = {i: builtin.logits(img, prompt, record["alt"]) for i, img in renders.items()}
    base_answer = {i: builtin.answer(img, prompt) for i, img in renders.items()}
    editor = editor_on(builtin)
    editor.edit(request(world, record))
    reached = [i for i, img in renders.items() if editor.route_of(img, prompt)[0] == 0]
    assert len(reached) >= 3, reached  # the control: without the example the edit reaches these renders
    negative = reached[len(reached) // 2]
    editor.edit(request(world, record, never=[renders[negative]]))  # a re-edit of the fact: its slot is replaced
    assert editor.size == 1
    assert editor.route_of(renders[negative], prompt)[0] == NO_SLOT
    assert torch.equal(editor.logits(renders[negative], prompt, record["alt"]), base[negative])
    assert editor.answer(renders[negative], prompt) == base_answer[negative]
    assert editor.answer(render(world, record, 0), prompt) == record["alt"]
    still = [i for i in reached if i != negative and editor.route_of(renders[i], prompt)[0] == 0]
    assert still  # the edit still reaches other renders of the subject


def test_an_also_example_follows_the_edit(builtin, world, records) -> None:
    prompt_of = {r["record_id"]: r["src"] for r in records}
    editor = editor_on(builtin)
    # the first record whose edit does not reach some render of its subject
    for slot, record in enumerate(records):
        editor.edit(request(world, record))
        missed = [i for i in range(1, 8) if editor.route_of(render(world, record, i), record["src"])[0] != slot]
        if missed:
            break
    else:
        pytest.fail("every edit reached every render: no case to test an also example on")
    positive = render(world, record, missed[0])
    prompt = prompt_of[record["record_id"]]
    before = editor.answer(positive, prompt)
    assert before != record["alt"]
    editor.edit(request(world, record, also=[positive]))
    assert editor.route_of(positive, prompt)[:1] == (slot,)
    assert editor.answer(positive, prompt) == record["alt"]
    assert editor.answer(render(world, record, 0), prompt) == record["alt"]


def test_an_inseparable_never_example_is_refused_and_nothing_is_written(builtin, world, records) -> None:
    record = records[0]
    editor = editor_on(builtin)
    editor.edit(request(world, records[1]))
    state = editor.state_dict()
    other = render(world, record, 3)
    cases = [
        (dict(never=[render(world, record, 0)]), "never example 1 .* shows the edit's own image"),
        (dict(also=[other], never=[(other, None)]), "never example 1 .* cannot be kept apart from also example 1"),
    ]
    for examples, message in cases:
        with pytest.raises(ScopeConflict, match=message):
            editor.edit(request(world, record, **examples))
        assert same_state(editor.state_dict(), state)
        assert editor.size == 1 and editor.edits_applied == 1


def test_contradictory_examples_are_clear_errors(builtin, world, records) -> None:
    record = records[0]
    editor = editor_on(builtin)
    with pytest.raises(ValueError, match="scope 'instance'"):
        editor.edit(request(world, record, scope="instance", also=[render(world, record, 3)]))
    with pytest.raises(ValueError, match="text-only edit"):
        editor.edit(EditRequest(prompt=record["src"], target=record["alt"], never=[render(world, record, 3)]))
    assert editor.size == 0


def test_examples_round_trip_and_older_states_load(builtin, world, records) -> None:
    record = records[1]
    editor = editor_on(builtin)
    positive, negative = render(world, record, 4), render(world, record, 2, lookalike=True)
    editor.edit(request(world, record, also=[positive], never=[negative]))
    # the also table holds the example and the views of the edit image
    assert editor.memory.examples["also"].n == 1 + editor.config.views and editor.memory.examples["never"].n == 1
    route = editor.route_of(positive, record["src"])
    assert route[0] == 0 and editor.route_of(negative, record["src"])[0] == NO_SLOT
    assert float(editor.memory.slots["cap_image"][0]) < editor.memory.limits.cap  # the also example set it
    state = editor.state_dict()
    editor.remove()
    fresh = editor_on(builtin)
    fresh.load_state_dict(state)
    assert same_state(fresh.state_dict(), state)
    assert fresh.route_of(positive, record["src"]) == route
    # a re-edit of the fact without examples drops them with the slot it replaces
    fresh.edit(request(world, record))
    views = fresh.config.views * int(fresh.memory.slots["shared"][0])
    assert fresh.size == 1 and fresh.memory.examples["also"].n == views and fresh.memory.examples["never"].n == 0
    # a state saved before examples were kept as keys: no example tables
    older = {k: v for k, v in state.items() if ".examples." not in k}
    fresh.load_state_dict(older)
    assert fresh.size == 1 and fresh.memory.examples["also"].n == 0
    assert torch.equal(fresh.memory.slots["tau_image"], state["scopememory.slots.tau_image"])
    # and one saved before scope examples existed at all
    oldest = {k: v for k, v in older.items() if ".cap_" not in k}
    fresh.load_state_dict(oldest)
    assert float(fresh.memory.slots["cap_image"][0]) == pytest.approx(fresh.memory.limits.cap)


@pytest.mark.parametrize("name", ["scopeedit", "grace"])
def test_editors_without_examples_refuse_them(name: str) -> None:
    from editscope.config import load_preset
    from editscope.models import VisionLanguageModel

    model, processor = build_tiny("LlavaForConditionalGeneration", seed=0)
    vlm = VisionLanguageModel(model.to(TEST_DEVICE), processor)
    editor = build_editor(name, vlm, load_preset("tiny") if name == "scopeedit" else None)
    with pytest.raises(ValueError, match=f"the {name} editor does not take scope examples"):
        editor.edit(EditRequest(prompt="what is it ?", target="red", image=image(1), never=[image(2)]))
    assert editor.edits_applied == 0


def test_reset_forgets_the_examples_with_the_slots(builtin, world, records) -> None:
    editor = editor_on(builtin)
    for record in records[:2]:
        editor.edit(request(world, record, also=[render(world, record, 4)],
                            never=[render(world, record, 2, lookalike=True)]))
    assert editor.memory.examples["never"].n == 2
    editor.reset()
    assert editor.size == 0 and editor.memory.examples["also"].n == 0 and editor.memory.examples["never"].n == 0
    editor.edit(request(world, records[0]))  # one slot again: no example may point past it
    assert editor.route_of(render(world, records[0], 0), records[0]["src"])[0] == 0
