"""ScopeMemory on a tiny random LLaVA and on the built-in model: exact before any edit, one slot
per fact, scope by routing, answer() and score() routed alike, state round trips, transactions."""

from __future__ import annotations

import pytest
import torch
from tiny_models import TEST_DEVICE, build_tiny
from tiny_models import noise_image as image

from editscope.editors.registry import build_editor
from editscope.editors.base import EditRejected
from editscope.editors.scopememory import ScopeMemory, ScopeMemoryConfig, load_memory_preset
from editscope.editors.scopememory.router import NO_SLOT
from editscope.models import VisionLanguageModel
from editscope.types import EditRequest

PROMPT = "what color is the object in the image ?"


def tiny_vlm(seed: int = 0) -> VisionLanguageModel:
    model, processor = build_tiny("LlavaForConditionalGeneration", seed=seed)
    return VisionLanguageModel(model.to(TEST_DEVICE), processor)


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_exact_before_any_edit(vlm) -> None:
    probes = [(image(1), PROMPT, "red"), (None, "who made it ?", "green fish")]
    before = [vlm.logits(*p) for p in probes]
    editor = ScopeMemory(vlm, load_memory_preset("tiny"))
    for p, logits in zip(probes, before):
        assert torch.equal(editor.logits(*p), logits)
    editor.remove()
    assert torch.equal(vlm.logits(*probes[0]), before[0])


def test_edit_absorbs_and_unrelated_inputs_keep_base_logits(vlm) -> None:
    unrelated = (image(7), "who made it ?", "blue")
    base = vlm.logits(*unrelated)
    editor = ScopeMemory(vlm, load_memory_preset("tiny"))
    result = editor.edit(EditRequest(image=image(1), prompt=PROMPT, target="green fish"))
    assert result.loss_after < result.loss_before
    assert editor.route_of(image(1), PROMPT)[0] == 0
    assert editor.route_of(*unrelated[:2])[0] == NO_SLOT
    assert torch.equal(editor.logits(*unrelated), base)  # no slot matched: the base model's logits


def test_reedits_replace_the_slot(vlm) -> None:
    editor = ScopeMemory(vlm, load_memory_preset("tiny"))
    sizes, state_bytes = [], []
    for target in ("green fish", "red", "blue house", "dog"):
        editor.edit(EditRequest(image=image(1), prompt=PROMPT, target=target))
        sizes.append(editor.size)
        state_bytes.append(editor.state_bytes())
    assert sizes == [1, 1, 1, 1] and len(set(state_bytes)) == 1  # state grows with facts, not edits
    assert editor.memory.slots.n == 1
    editor.edit(EditRequest(image=image(2), prompt=PROMPT, target="red"))
    assert editor.size == 2 and editor.state_bytes() > state_bytes[-1]
    # an explicit fact id makes another prompt the same fact
    editor.edit(EditRequest(image=image(3), prompt="who made it ?", target="cat", fact_id="f"))
    editor.edit(EditRequest(image=image(4), prompt="what is it ?", target="dog", fact_id="f"))
    assert editor.size == 3
    assert editor.forget(editor.fact_of(EditRequest(image=image(2), prompt=PROMPT, target="x")))
    assert editor.size == 2 and editor.route_of(image(2), PROMPT)[0] == NO_SLOT


def test_answer_and_score_route_alike(vlm) -> None:
    editor = ScopeMemory(vlm, load_memory_preset("tiny"))
    editor.edit(EditRequest(image=image(1), prompt=PROMPT, target="green fish"))
    editor.edit(EditRequest(prompt="who made it ?", target="red"))
    for img, prompt in ((image(1), PROMPT), (None, "who made it ?"), (image(5), "what is it ?")):
        editor.answer(img, prompt, max_new_tokens=4)
        during_answer = editor.memory.last_route
        editor.score(img, prompt, "green fish")
        during_score = editor.memory.last_route
        assert [t.tolist() for t in (during_answer.slot, during_answer.local, during_answer.shared)] == \
            [t.tolist() for t in (during_score.slot, during_score.local, during_score.shared)]
    editor.answer(image(1), PROMPT, max_new_tokens=4)
    assert editor.memory.last_route.slot.tolist() == [0]


def test_save_load_gives_identical_logits(tmp_path) -> None:
    editor = ScopeMemory(tiny_vlm(), load_memory_preset("tiny"))
    editor.edit(EditRequest(image=image(1), prompt=PROMPT, target="green fish"))
    editor.edit(EditRequest(prompt="who made it ?", target="red"))
    probes = [(image(1), PROMPT, "green fish"), (None, "who made it ?", "red"), (image(9), PROMPT, "x")]
    expected = [editor.logits(*p) for p in probes]
    editor.save(tmp_path / "state")
    fresh = ScopeMemory(tiny_vlm(), load_memory_preset("tiny"))
    fresh.load(tmp_path / "state")
    assert fresh.size == 2 and fresh.edits_applied == 2
    for p, logits in zip(probes, expected):
        assert torch.equal(fresh.logits(*p), logits)
    with pytest.raises(ValueError, match="does not match"):
        fresh.load_state_dict({k: v for k, v in editor.state_dict().items() if "tau_text" not in k})


def test_rejected_edit_leaves_state_unchanged(vlm, monkeypatch) -> None:
    editor = ScopeMemory(vlm, load_memory_preset("tiny"))
    editor.edit(EditRequest(image=image(1), prompt=PROMPT, target="green fish"))
    before = editor.state_dict()
    original = editor._loss_and_margin

    def poisoned(inputs):
        loss, margin = original(inputs)
        return loss * float("nan"), margin

    monkeypatch.setattr(editor, "_loss_and_margin", poisoned)
    with pytest.raises(EditRejected):
        editor.edit(EditRequest(image=image(2), prompt=PROMPT, target="red"))
    assert same_state(before, editor.state_dict())
    with pytest.raises(ValueError, match="target"):
        editor.edit(EditRequest(image=image(2), prompt=PROMPT, target=" "))


def test_wrong_key_layer_and_double_wrapping_are_clear_errors(vlm) -> None:
    with pytest.raises(ValueError, match="key_layer"):
        ScopeMemory(vlm, ScopeMemoryConfig(key_layer=50))
    ScopeMemory(vlm, load_memory_preset("tiny"))
    with pytest.raises(ValueError, match="remove"):
        ScopeMemory(vlm, load_memory_preset("tiny"))


# -- the built-in model -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world_cases(tmp_path_factory):
    from editscope.evaluation.data import load_records
    from editscope.world import builtin_path, load_world, write_edits

    path = write_edits(load_world(builtin_path()), "dev", tmp_path_factory.mktemp("world") / "dev", n=12)
    return load_records("world", path, path.parent)


@pytest.fixture()
def builtin():
    import editscope

    return editscope.load("builtin", device=str(TEST_DEVICE))


def builtin_editor(vlm) -> ScopeMemory:
    from editscope.editors.reference import load_reference

    cfg = load_memory_preset("builtin")
    return build_editor("scopememory", vlm, cfg, reference=load_reference("world", "builtin", 32))


def test_builtin_scope_instance_keeps_the_other_render_and_broad_changes_it(builtin, world_cases) -> None:
    case = next(c for c in world_cases if c.image_rephrase is not None)
    render = case.image_rephrase
    base = builtin.logits(render.image, render.prompt, case.request.target)
    editor = builtin_editor(builtin)
    result = editor.edit(EditRequest(image=case.request.image, prompt=case.request.prompt,
                                     target=case.request.target, scope="instance"))
    assert result.gates == {}
    assert editor.score(case.request.image, case.request.prompt, case.request.target).token_accuracy == 1.0
    assert torch.equal(editor.logits(render.image, render.prompt, case.request.target), base)
    editor.edit(EditRequest(image=case.request.image, prompt=case.request.prompt,
                            target=case.request.target, scope="broad"))
    assert editor.size == 1
    slot, local, shared = editor.route_of(render.image, render.prompt)
    assert (slot, local, shared) == (0, False, True)
    changed = editor.logits(render.image, render.prompt, case.request.target)
    assert not torch.equal(changed, base)
    assert editor.score(render.image, render.prompt, case.request.target).token_accuracy >= 0.5


def test_builtin_out_of_scope_probes_keep_base_logits(builtin, world_cases) -> None:
    probes = [p for c in world_cases[:4] for p in (c.loc, c.m_loc, *c.other_fact) if p is not None]
    base = [builtin.logits(p.image, p.prompt, p.answer) for p in probes]
    editor = builtin_editor(builtin)
    for case in world_cases[:4]:
        editor.edit(case.request)
    kept = sum(torch.equal(editor.logits(p.image, p.prompt, p.answer), b) for p, b in zip(probes, base))
    assert kept == len(probes)
    for case in world_cases[:4]:
        assert editor.score(case.request.image, case.request.prompt, case.request.target).token_accuracy == 1.0


def test_builtin_answer_after_an_edit_is_exactly_the_target(builtin, world_cases) -> None:
    # the slot learns the end of the answer too: generation stops after the target, with no
    # repeated tokens after it (a target trained without its end runs on: "1835" -> "18353535...")
    editor = builtin_editor(builtin)
    cases = [c for c in world_cases if builtin.answer(c.request.image, c.request.prompt) != c.request.target][:4]
    assert cases
    for case in cases:
        editor.edit(case.request)
        assert editor.answer(case.request.image, case.request.prompt) == case.request.target


def test_builtin_whitened_keys_round_trip_and_older_states_load(builtin, world_cases, tmp_path) -> None:
    from dataclasses import replace

    from editscope.editors.reference import load_reference

    reference = load_reference("world", "builtin", 32)
    cfg = replace(load_memory_preset("builtin"), image_whitening=0.1)
    editor = build_editor("scopememory", builtin, cfg, reference=reference)
    assert editor.memory.whiten_basis.shape[0] > 0
    case = world_cases[0]
    editor.edit(case.request)
    probes = [(case.request.image, case.request.prompt, case.request.target),
              (case.image_rephrase.image, case.image_rephrase.prompt, case.request.target)]
    expected = [editor.logits(*p) for p in probes]
    route = editor.route_of(*probes[1][:2])
    state = editor.state_dict()
    editor.remove()
    fresh = build_editor("scopememory", builtin, replace(cfg, image_whitening=0.0), reference=reference)
    fresh.load_state_dict(state)  # the state's whitening wins over the config's
    assert [torch.equal(fresh.logits(*p), e) for p, e in zip(probes, expected)] == [True, True]
    assert fresh.route_of(*probes[1][:2]) == route
    # a state saved before image whitening existed has no whitening tensors: keys are centred only
    older = {k: v for k, v in state.items() if "whiten" not in k}
    fresh.load_state_dict(older)
    assert fresh.memory.whiten_basis.shape[0] == 0
    with pytest.raises(ValueError, match="whitening shapes"):
        fresh.load_state_dict({**state, "scopememory.router.whiten_scale": torch.zeros(3)})


def test_builtin_reference_agreement_keeps_the_subjects_own_picture_out_of_the_negatives(builtin, world_cases) -> None:
    from dataclasses import replace

    from editscope.editors.reference import load_reference
    from editscope.types import Probe

    case = world_cases[0]
    render = case.image_rephrase  # another picture of the subject: the shared write should reach it
    before = builtin.answer(case.request.image, case.request.prompt)
    # a reference probe of that picture, asked the edited fact, with the answer before the edit
    reference = [*load_reference("world", "builtin", 32), Probe(render.prompt, before, render.image)]
    routes, states = {}, {}
    for agree in (False, True):
        cfg = replace(load_memory_preset("builtin"), reference_agreement=agree)
        editor = build_editor("scopememory", builtin, cfg, reference=reference)
        editor.edit(case.request)
        routes[agree] = editor.route_of(render.image, render.prompt)
        states[agree] = editor.state_dict()
        editor.remove()
    assert routes[False] == (NO_SLOT, False, False)  # the probe, a negative, keeps the picture out
    assert routes[True] == (0, False, True)  # left out of the negatives: the shared write reaches it
    answers = states[True]["scopememory.router.reference_answer"]
    assert answers.shape == (len(reference),) and bool((answers > 0).all())
    fresh = build_editor("scopememory", builtin, replace(load_memory_preset("builtin"), reference_agreement=True),
                         reference=reference)
    fresh.load_state_dict(states[True])
    assert fresh.route_of(render.image, render.prompt) == routes[True]
    assert torch.equal(fresh.reference_answers, answers.to(fresh.reference_answers.device))
    # answers that do not fit the reference keys are refused before anything is loaded
    with pytest.raises(ValueError, match="reference_answer"):
        fresh.load_state_dict({**states[True], "scopememory.router.reference_answer": answers[:3]})
    assert fresh.route_of(render.image, render.prompt) == routes[True]
    assert torch.equal(fresh.reference_answers, answers.to(fresh.reference_answers.device))
    # a state saved before reference_agreement has no answers: none is left out
    fresh.load_state_dict({k: v for k, v in states[True].items() if "reference_answer" not in k})
    assert int(fresh.reference_answers.abs().sum()) == 0


def test_many_slots_route_through_the_half_precision_scan_as_without_it(vlm, monkeypatch) -> None:
    from editscope.editors.scopememory import slots as slot_module
    from editscope.editors.scopememory.synthetic import fill_synthetic

    editor = ScopeMemory(vlm, load_memory_preset("tiny"))
    editor.edit(EditRequest(image=image(1), prompt=PROMPT, target="green fish"))
    fill_synthetic(editor, slot_module.SCAN_FROM, seed=3)
    scan = editor.memory.scan()
    assert scan is not None and scan.text.shape[0] == editor.memory.slots.n
    assert editor.memory.scan() is scan  # kept while nothing changes
    probes = [(image(1), PROMPT, "green fish"), (image(7), "who made it ?", "blue")]
    with_scan = [(editor.logits(*p), editor.memory.last_route.slot.tolist()) for p in probes]
    monkeypatch.setattr(slot_module, "SCAN_FROM", 10**9)
    assert editor.memory.scan() is None
    without = [(editor.logits(*p), editor.memory.last_route.slot.tolist()) for p in probes]
    assert [r for _, r in with_scan] == [[0], [NO_SLOT]] == [r for _, r in without]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(with_scan, without))
    monkeypatch.undo()
    editor.edit(EditRequest(image=image(2), prompt=PROMPT, target="red"))
    renewed = editor.memory.scan()
    assert renewed is not scan and renewed.text.shape[0] == editor.memory.slots.n


def test_builtin_reusing_the_vision_tower_in_a_phase_changes_nothing(builtin, world_cases, monkeypatch) -> None:
    """The training phases reuse the vision tower's outputs; the slots come out bit for bit as
    when every step recomputes them."""
    from contextlib import contextmanager, nullcontext

    import editscope.models.vlm as vlm_module
    from editscope.evaluation.protocol import ProtocolConfig, anchored_request

    requests = [anchored_request(case, ProtocolConfig()) for case in world_cases[:2]]
    computed: list[int] = []  # vision computations per phase
    original = vlm_module.reusing_outputs

    @contextmanager
    def counted(module):
        with original(module) as cache:
            yield cache
        computed.append(len(cache))

    monkeypatch.setattr(vlm_module, "reusing_outputs", counted)
    reused = builtin_editor(builtin)
    steps = [reused.edit(r).steps for r in requests]
    state = {k: v.clone() for k, v in reused.state_dict().items()}
    reused.remove()
    # at most the edit image and its 2 training views per phase, over many more forward passes
    assert min(steps) > 1 and computed and max(computed) <= 3
    monkeypatch.setattr(vlm_module, "reusing_outputs", lambda module: nullcontext())
    recomputed = builtin_editor(builtin)
    assert [recomputed.edit(r).steps for r in requests] == steps
    assert same_state(state, recomputed.state_dict())


def test_keys_end_the_pass_at_the_key_layer_and_equal_a_whole_pass(vlm) -> None:
    editor = ScopeMemory(vlm, load_memory_preset("tiny"))
    inputs = vlm.encode(image(1), PROMPT, "green fish")
    last = vlm.decoder_layers()[-1]
    ran: list[int] = []
    handle = last.register_forward_pre_hook(lambda module, args: ran.append(1))
    try:
        with torch.no_grad(), editor.memory.capture_keys() as whole:
            vlm.forward(inputs)
        assert len(ran) == 1
        early = editor._keys(inputs)
    finally:
        handle.remove()
    assert len(ran) == 1  # the last decoder layer did not run for the keys
    assert all(torch.equal(a, b) for a, b in zip(whole[0], early))


def test_a_batch_of_the_same_tokens_scores_each_row_as_alone(vlm) -> None:
    from editscope.types import ModelInputs

    editor = ScopeMemory(vlm, load_memory_preset("tiny"))
    rows = [vlm.encode(image(i), PROMPT, "green fish", end=True) for i in (1, 2, 3)]
    with torch.no_grad():
        alone = [editor._loss_and_margin(r) for r in rows]
        loss, margins = editor._loss_and_margin(ModelInputs.stack(rows))
    assert loss.shape == (3,) and len(margins) == 3
    assert torch.allclose(loss, torch.cat([a[0] for a in alone]), atol=1e-5)
    assert margins == pytest.approx([a[1][0] for a in alone], abs=1e-4)
    assert len({round(m, 3) for m in margins}) > 1  # the images differ, so do the rows


def test_an_input_whose_question_matches_no_slot_skips_the_image_key(vlm, monkeypatch) -> None:
    editor = ScopeMemory(vlm, load_memory_preset("tiny"))
    editor.edit(EditRequest(image=image(1), prompt=PROMPT, target="green fish"))
    editor.memory.slots.data["tau_text"][0] = 0.9999  # only the edit's own question matches now
    unrelated = (image(1), "who made it ?", "blue")
    base_route = editor.route_of(*unrelated[:2])
    logits = editor.logits(*unrelated)

    def refuse(*args, **kwargs):
        raise AssertionError("the image key was computed for an input no slot's question matches")

    monkeypatch.setattr(editor.memory, "image_keys", refuse)
    assert editor.route_of(*unrelated[:2]) == base_route == (NO_SLOT, False, False)
    assert torch.equal(editor.logits(*unrelated), logits)
    with pytest.raises(AssertionError, match="image key"):
        editor.route_of(image(1), PROMPT)  # this one matches the slot's question
