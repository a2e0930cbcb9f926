"""ScopeMemory's router as pure functions: prompt ends, matching, calibration, slot tables."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from editscope.editors.scopememory.config import ScopeMemoryConfig, config_reference
from editscope.editors.scopememory.router import (
    NO_SLOT, SlotKeys, Thresholds, common_suffix, match, prompt_ends, raise_thresholds, unit_keys, whitening,
)
from editscope.editors.scopememory.slots import Table

LIMITS = Thresholds(instance=0.99, text_only=0.9, margin=0.02, cap=0.98)


def slots(text, image, has_image, shared, tau_text=0.8, tau_image=0.85) -> SlotKeys:
    n = len(text)
    return SlotKeys(
        text=F.normalize(torch.tensor(text, dtype=torch.float32), dim=-1),
        image=F.normalize(torch.tensor(image, dtype=torch.float32), dim=-1) * torch.tensor(has_image)[:, None],
        has_image=torch.tensor(has_image), shared=torch.tensor(shared), active=torch.ones(n, dtype=torch.bool),
        tau_text=torch.full((n,), tau_text), tau_image=torch.full((n,), tau_image),
    )


def unit(*rows) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_common_suffix_and_prompt_ends() -> None:
    assert common_suffix([[1, 2, 7, 8], [5, 7, 8], [9, 9, 7, 8]]) == (7, 8)
    assert common_suffix([[1, 2], [3, 4]]) == ()
    ids = torch.tensor([[0, 7, 8, 3, 7, 8, 5, 6], [0, 1, 2, 3, 4, 5, 6, 9]])
    # the last occurrence of the marker ends the prompt; no marker: the last position
    assert prompt_ends(ids, torch.tensor([7, 8])).tolist() == [5, 7]
    assert prompt_ends(ids, torch.tensor([], dtype=torch.long)).tolist() == [7, 7]


def test_match_routes_instance_subject_and_nothing() -> None:
    table = slots(text=[[1, 0, 0], [0, 1, 0]], image=[[1, 0, 0], [0, 0, 1]], has_image=[True, True],
                  shared=[True, False])
    q = unit([1, 0, 0], [1, 0.05, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1])
    v = unit([1, 0, 0], [1, 0.3, 0], [0, 1, 0], [0.9, 0, 0.5], [1, 0, 0])
    has = torch.ones(5, dtype=torch.bool)
    route = match(q, v, has, table, LIMITS)
    # 0: the slot's own image and question -> local and shared; 1: another image of the subject
    # (image cos 0.96) -> shared only; 2: an unrelated image; 3: slot 1's question on an image
    # close to slot 1's but not its own, and slot 1 may not spread -> nothing; 4: no question match
    assert route.slot.tolist() == [0, 0, NO_SLOT, NO_SLOT, NO_SLOT]
    assert route.local.tolist() == [True, False, False, False, False]
    assert route.shared.tolist() == [True, True, False, False, False]


def test_match_text_only_inputs() -> None:
    table = slots(text=[[1, 0, 0], [0, 1, 0]], image=[[1, 0, 0], [0, 0, 0]], has_image=[True, False],
                  shared=[True, False])
    q = unit([1, 0.1, 0], [1, 0.6, 0], [0, 1, 0.1])
    route = match(q, torch.zeros(3, 3), torch.zeros(3, dtype=torch.bool), table, LIMITS)
    # a text-only question close to an image slot's gets its shared write (cos 0.995 >= 0.9, but
    # 0.857 is not); a text-only slot's local write applies to its own text-only question
    assert route.slot.tolist() == [0, NO_SLOT, 1]
    assert route.local.tolist() == [False, False, True]
    assert route.shared.tolist() == [True, False, False]


def test_match_picks_the_closest_of_several_candidates() -> None:
    table = slots(text=[[1, 0.2, 0], [1, 0, 0]], image=[[1, 0, 0], [1, 0, 0]], has_image=[True, True],
                  shared=[True, True])
    route = match(unit([1, 0, 0]), unit([1, 0, 0]), torch.ones(1, dtype=torch.bool), table, LIMITS)
    assert route.slot.tolist() == [1]


def test_raise_thresholds_excludes_negatives_by_the_cheaper_key() -> None:
    table = slots(text=[[1, 0, 0]], image=[[1, 0, 0]], has_image=[True], shared=[True])
    # same image, a question at cos 0.894: only the question threshold can exclude it
    same_image = (unit([1, 0.5, 0]), unit([1, 0, 0]))
    tau_text, tau_image = raise_thresholds(table, *same_image, torch.ones(1, dtype=torch.bool), LIMITS)
    assert abs(float(tau_text[0]) - (0.8944 + 0.02)) < 1e-3 and float(tau_image[0]) == pytest.approx(0.85)
    # a look-alike image (cos 0.894) with the same question: the image threshold is raised
    look_alike = (unit([1, 0, 0]), unit([1, 0.5, 0]))
    tau_text, tau_image = raise_thresholds(table, *look_alike, torch.ones(1, dtype=torch.bool), LIMITS)
    assert float(tau_text[0]) == pytest.approx(0.8) and abs(float(tau_image[0]) - 0.9144) < 1e-3
    after = SlotKeys(**{**table.__dict__, "tau_text": tau_text, "tau_image": tau_image})
    assert match(*look_alike, torch.ones(1, dtype=torch.bool), after, LIMITS).slot.tolist() == [NO_SLOT]
    # a negative identical to the edit cannot be excluded: thresholds stop at the cap
    tau_text, _ = raise_thresholds(table, unit([1, 0, 0]), unit([1, 0, 0]), torch.ones(1, dtype=torch.bool), LIMITS)
    assert float(tau_text[0]) == pytest.approx(LIMITS.cap)
    # a far negative changes nothing
    far = raise_thresholds(table, unit([0, 1, 0]), unit([0, 0, 1]), torch.ones(1, dtype=torch.bool), LIMITS)
    assert far[0].tolist() == pytest.approx([0.8]) and far[1].tolist() == pytest.approx([0.85])


def test_raise_thresholds_respects_each_slots_caps() -> None:
    from dataclasses import replace

    table = slots(text=[[1, 0, 0]], image=[[1, 0, 0]], has_image=[True], shared=[True])
    has = torch.ones(1, dtype=torch.bool)
    # a look-alike at image cos 0.894 whose question is at cos 0.928: the image raise is cheaper...
    look_alike = (unit([1, 0.4, 0]), unit([1, 0.5, 0]))
    tau_text, tau_image = raise_thresholds(table, *look_alike, has, LIMITS)
    assert float(tau_text[0]) == pytest.approx(0.8) and abs(float(tau_image[0]) - 0.9144) < 1e-3
    # ... but an also example at image cos 0.9 caps the image threshold there: the question is raised
    capped = replace(table, cap_image=torch.tensor([0.9]))
    tau_text, tau_image = raise_thresholds(capped, *look_alike, has, LIMITS)
    assert float(tau_image[0]) == pytest.approx(0.85) and abs(float(tau_text[0]) - (0.9285 + 0.02)) < 1e-3
    # where neither raise fits under the caps, both stop at them and the negative still passes
    both = replace(table, cap_image=torch.tensor([0.9]), cap_text=torch.tensor([0.92]))
    tau_text, tau_image = raise_thresholds(both, *look_alike, has, LIMITS)
    assert float(tau_text[0]) == pytest.approx(0.92) and float(tau_image[0]) == pytest.approx(0.85)
    after = replace(both, tau_text=tau_text, tau_image=tau_image)
    assert match(*look_alike, has, after, LIMITS).slot.tolist() == [0]


def test_raise_thresholds_respects_each_slots_question_cap() -> None:
    from dataclasses import replace

    table = slots(text=[[1, 0, 0]], image=[[1, 0, 0]], has_image=[True], shared=[True], tau_image=0.5)
    has = torch.ones(1, dtype=torch.bool)
    # a look-alike whose question is at cos 0.894 and image at cos 0.928: the question raise is cheaper...
    look_alike = (unit([1, 0.5, 0]), unit([1, 0.4, 0]))
    tau_text, tau_image = raise_thresholds(table, *look_alike, has, LIMITS)
    assert abs(float(tau_text[0]) - 0.9144) < 1e-3 and float(tau_image[0]) == pytest.approx(0.5)
    # ... but an also example's question at cos 0.9 caps the question threshold: the image is raised
    capped = replace(table, cap_text=torch.tensor([0.9]))
    tau_text, tau_image = raise_thresholds(capped, *look_alike, has, LIMITS)
    assert float(tau_text[0]) == pytest.approx(0.8) and abs(float(tau_image[0]) - (0.9285 + 0.02)) < 1e-3
    # where neither raise fits under the caps, the question stops at its cap and the negative still passes
    close = (unit([1, 0.5, 0]), unit([1, 0.2, 0]))  # image cos 0.981: its raise would pass the global cap
    low = replace(table, cap_text=torch.tensor([0.88]))
    tau_text, tau_image = raise_thresholds(low, *close, has, LIMITS)
    assert float(tau_text[0]) == pytest.approx(0.88) and float(tau_image[0]) == pytest.approx(0.5)
    after = replace(low, tau_text=tau_text, tau_image=tau_image)
    assert match(*close, has, after, LIMITS).slot.tolist() == [0]


def with_examples(table: SlotKeys, also=(), also_owner=(), never=(), never_owner=()) -> SlotKeys:
    from dataclasses import replace

    from editscope.editors.scopememory.router import Examples

    def keys(rows):
        return unit(*rows) if rows else torch.zeros(0, 3)

    return replace(table, examples=Examples(keys(also), torch.tensor(also_owner, dtype=torch.long),
                                            keys(never), torch.tensor(never_owner, dtype=torch.long)))


def test_the_shared_rule_measures_an_image_by_its_nearest_positive_and_negative() -> None:
    base = slots(text=[[1, 0, 0], [1, 0, 0]], image=[[1, 0, 0], [0, 0, 1]], has_image=[True, True],
                 shared=[True, False])
    # slot 0: an also example at [0, 1, 0] and a never example at [1, 0.3, 0] (image cos 0.958 to the edit)
    table = with_examples(base, also=[[0, 1, 0]], also_owner=[0], never=[[1, 0.3, 0]], never_owner=[0])
    q = unit([1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0])
    v = unit([0.1, 1, 0], [1, 0.35, 0], [1, 0.05, 0], [0.2, 0.2, 1])
    has = torch.ones(4, dtype=torch.bool)
    route = match(q, v, has, table, LIMITS)
    # 0: far from the edit's image (cos 0.10) but near the also example -> shared; 1: image cos 0.944
    # to the edit but nearer the never example -> nothing; 2: nearer the edit than the never -> shared;
    # 3: near slot 1's image, which may not spread -> nothing
    assert route.slot.tolist() == [0, NO_SLOT, 0, NO_SLOT]
    assert route.shared.tolist() == [True, False, True, False]
    # without the examples, input 0 is out and input 1 is in
    assert match(q, v, has, base, LIMITS).slot.tolist() == [NO_SLOT, 0, 0, NO_SLOT]
    # a negative near the also example (cos 0.894; cos 0.447 to the edit's image) is excluded by the
    # image threshold over the nearest positive
    tau_text, tau_image = raise_thresholds(table, unit([1, 0.5, 0]), unit([0.5, 1, 0]), has[:1], LIMITS)
    assert float(tau_text[0]) == pytest.approx(0.8) and abs(float(tau_image[0]) - 0.9144) < 1e-3


def test_raise_thresholds_excludes_the_own_image_by_the_question_only() -> None:
    # the slot's own image passes the local rule, which the image threshold does not gate
    table = slots(text=[[1, 0, 0]], image=[[1, 0, 0]], has_image=[True], shared=[True], tau_image=0.5)
    own_image = (unit([1, 0.3, 0]), unit([1, 0, 0]))
    tau_text, tau_image = raise_thresholds(table, *own_image, torch.ones(1, dtype=torch.bool), LIMITS)
    assert abs(float(tau_text[0]) - (0.9578 + 0.02)) < 1e-3 and float(tau_image[0]) == pytest.approx(0.5)


def test_table_grows_and_keeps_rows() -> None:
    table = Table({"a": ((2,), torch.float32), "b": ((), torch.bool)}, torch.device("cpu"))
    for i in range(20):
        table.write(table.n, {"a": torch.tensor([i, -i]), "b": torch.tensor(i % 2 == 0)})
    assert table.n == 20 and table["a"][13].tolist() == [13.0, -13.0]
    table.write(3, {"a": torch.tensor([7, 7]), "b": torch.tensor(False)})
    assert table.n == 20 and table["a"][3].tolist() == [7.0, 7.0]
    state = table.state()
    assert state["a"].shape == (20, 2)
    other = Table(table.shapes, torch.device("cpu"))
    other.load(state, 20)
    assert torch.equal(other["a"], table["a"]) and torch.equal(other["b"], table["b"])


def test_config_validation_and_reference() -> None:
    for bad in ({"linears": "some"}, {"slot_rank": 0}, {"text_threshold": 1.5}, {"lr": 0}, {"view_margin": -0.1}):
        try:
            ScopeMemoryConfig(**bad)
        except ValueError as error:
            assert list(bad)[0] in str(error)
        else:
            raise AssertionError(f"{bad} was accepted")
    try:
        ScopeMemoryConfig.from_dict({"no_such_key": 1})
    except ValueError as error:
        assert "no_such_key" in str(error)
    else:
        raise AssertionError("an unknown key was accepted")
    reference = config_reference()
    assert "| `slot_rank` |" in reference and "rank kept of a slot's write" in reference


def test_whitening_is_the_shrunk_inverse_square_root_of_the_covariance() -> None:
    torch.manual_seed(0)
    keys = torch.randn(40, 6) @ torch.diag(torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]))
    basis, scale = whitening(keys, 0.1)
    centred = keys - keys.mean(0)
    cov = centred.T @ centred / (keys.shape[0] - 1)
    lam = 0.1 * float(cov.diagonal().mean())
    values, vectors = torch.linalg.eigh(cov + lam * torch.eye(6))
    full = vectors @ torch.diag(values.rsqrt()) @ vectors.T
    x, centre = torch.randn(5, 6), keys.mean(0)
    expected = torch.nn.functional.normalize((x - centre) @ full, dim=-1)
    torch.testing.assert_close(unit_keys(x, centre, basis, scale), expected, atol=1e-5, rtol=0)
    # no basis: centred and normalised only
    torch.testing.assert_close(unit_keys(x, centre), torch.nn.functional.normalize(x - centre, dim=-1))
    # the direction the keys vary along most is shrunk the most
    assert float(scale.min()) == float(scale[0]) and -1 < float(scale[0]) < float(scale[-1]) <= 0


def test_subject_lead_sends_another_edited_subjects_image_to_no_other_slot() -> None:
    from dataclasses import replace

    # slot 0 asks about a year (question [1, 0, 0]); slot 1, another subject, about something else
    table = slots(text=[[1, 0, 0], [0, 1, 0]], image=[[1, 0, 0], [0.8, 0.6, 0]], has_image=[True, True],
                  shared=[True, True], tau_image=0.5)
    q = unit([1, 0, 0], [1, 0, 0])
    v = unit([0.7, 0.7, 0], [1, 0.1, 0])  # 0: slot 1's subject (cos 0.99 to it, 0.71 to slot 0's); 1: slot 0's
    has = torch.ones(2, dtype=torch.bool)
    assert match(q, v, has, table, LIMITS).slot.tolist() == [0, 0]  # without the test both reach slot 0
    lead = replace(LIMITS, lead=0.1)
    assert match(q, v, has, table, lead).slot.tolist() == [NO_SLOT, 0]
    # an inactive slot does not compete
    gone = replace(table, active=torch.tensor([True, False]))
    assert match(q, v, has, gone, lead).slot.tolist() == [0, 0]


def test_answer_id_compares_answers_as_reference_agreement_does() -> None:
    from editscope.editors.scopememory.facts import answer_id

    assert answer_id("Paris") == answer_id(" paris.") == answer_id("PARIS")
    assert answer_id("Paris") != answer_id("Lyon")
    assert answer_id("Paris") != answer_id("Paris Nord")
    assert all(0 < answer_id(a) < 2 ** 63 for a in ("", "x", "Paris"))


@pytest.mark.parametrize("offset", [0.0, 0.05])
@pytest.mark.parametrize("lead", [2.0, 0.1, 0.0005])
def test_the_half_precision_scan_routes_as_the_exact_match(lead: float, offset: float) -> None:
    """Clustered keys, so that many slots pass their question and cosines crowd the thresholds
    and each other (rival images a fraction of the half-precision error apart); with ``offset``,
    every other ``also`` example counts that much less near (as the editor's views do)."""
    from editscope.editors.scopememory.router import Examples, build_scan

    gen = torch.Generator().manual_seed(0)
    n, d, batch = 300, 64, 256

    def near(centres: torch.Tensor, rows: int, spread: float) -> torch.Tensor:
        pick = centres[torch.randint(0, centres.shape[0], (rows,), generator=gen)]
        return F.normalize(pick + spread * torch.randn(rows, d, generator=gen), dim=-1)

    questions = F.normalize(torch.randn(4, d, generator=gen), dim=-1)
    subjects = F.normalize(torch.randn(12, d, generator=gen), dim=-1)
    has_image = torch.rand(n, generator=gen) < 0.85
    table = SlotKeys(
        text=near(questions, n, 0.07), image=near(subjects, n, 0.07) * has_image[:, None], has_image=has_image,
        shared=torch.rand(n, generator=gen) < 0.6, active=torch.rand(n, generator=gen) < 0.9,
        tau_text=0.6 + 0.3 * torch.rand(n, generator=gen), tau_image=0.4 + 0.4 * torch.rand(n, generator=gen),
        examples=Examples(near(subjects, 900, 0.07), torch.randint(0, n, (900,), generator=gen),
                          near(subjects, 200, 0.07), torch.randint(0, n, (200,), generator=gen),
                          -offset * (torch.arange(900) % 2).float()))
    scan = build_scan(table)
    q = torch.cat([table.text[:64], near(questions, batch - 64, 0.07)])
    v = torch.cat([table.image[:64], near(subjects, batch - 96, 0.07),
                   F.normalize(table.image[64:96] + 1e-4 * torch.randn(32, d, generator=gen), dim=-1)])
    has = torch.rand(batch, generator=gen) < 0.8
    v = v * has[:, None]
    limits = Thresholds(instance=0.99, text_only=0.9, margin=0.02, cap=0.98, lead=lead)
    exact, fast = match(q, v, has, table, limits), match(q, v, has, table, limits, scan)
    assert int((exact.slot != NO_SLOT).sum()) > batch // 4  # the case is not trivially empty
    assert torch.equal(exact.slot, fast.slot)
    assert torch.equal(exact.local, fast.local) and torch.equal(exact.shared, fast.shared)
    one = match(q[:1], v[:1], has[:1], table, limits, scan)  # a batch of one, as in a forward pass
    assert int(one.slot[0]) == int(exact.slot[0])


def test_half_scan_fits_this_machine() -> None:
    from editscope.editors.scopememory.router import half_scan_fits

    assert half_scan_fits(torch.device("cpu"), 256)


def test_the_scan_recomputes_what_half_precision_cannot_tell_apart() -> None:
    """Cosines closer to a threshold, or to each other, than half precision resolves: a question
    that passes its slot's threshold by 1e-5 where the half-precision cosine falls short of it,
    and 60 slots' images within 2e-4 of each other where the lead rule needs the nearest of
    them exactly and half precision ranks another one first."""
    from dataclasses import replace

    from editscope.editors.scopememory.router import build_scan

    gen = torch.Generator().manual_seed(1)
    d, n = 256, 61
    x = F.normalize(torch.randn(2, d, generator=gen), dim=-1)
    q, v = x[:1], x[1:]

    def at(key: torch.Tensor, cosines: torch.Tensor) -> torch.Tensor:
        """Unit rows at exactly these cosines to the unit row ``key``."""
        other = torch.randn(cosines.numel(), d, generator=gen)
        other = F.normalize(other - (other @ key.T) * key, dim=-1)
        return cosines[:, None] * key + (1 - cosines[:, None] ** 2).sqrt() * other

    pool = at(q, torch.full((64,), 0.9))
    short = ((pool.half().float() @ q.T)[:, 0] < (pool @ q.T)[:, 0] - 1e-5).nonzero()[0, 0]
    text = torch.cat([pool[short:short + 1], at(q, torch.full((n - 1,), 0.5))])
    # 400 images around the point halfway between two half-precision numbers: take the nearest
    # one that half precision rounds down, and 59 less near ones, which it rounds up or down
    edge = (round(0.9 * 2048) + 0.5) / 2048
    crowd = at(v, edge + 2e-4 * (torch.rand(400, generator=gen) - 0.5))
    exact, approx = (crowd @ v.T)[:, 0], (crowd.half() @ v.half().T).float()[:, 0]
    down = torch.where(approx < approx.max(), exact, torch.full_like(exact, -2.0)).argmax()
    below = (exact < exact[down]).nonzero()[: n - 2, 0]
    image = torch.cat([at(v, torch.tensor([0.9])), crowd[down:down + 1], crowd[below]])
    tau_text = torch.full((n,), 2.0)
    tau_text[0] = float(text[0] @ q[0]) - 1e-5  # only slot 0's question passes, by 1e-5
    table = SlotKeys(text=text, image=image, has_image=torch.ones(n, dtype=torch.bool),
                     shared=torch.ones(n, dtype=torch.bool), active=torch.ones(n, dtype=torch.bool),
                     tau_text=tau_text, tau_image=torch.full((n,), 0.5))
    scan = build_scan(table)
    exact_image = (image @ v.T)[:, 0]
    approx_image = (scan.positive @ v.half().T).float()[:, 0]
    assert approx_image[exact_image.argmax()] < approx_image.max()  # half precision ranks the nearest lower
    has = torch.tensor([True])
    limits = Thresholds(instance=0.99, text_only=0.9, margin=0.02, cap=0.98)
    assert int(match(q, v, has, table, limits).slot[0]) == 0
    assert int(match(q, v, has, table, limits, scan).slot[0]) == 0
    # the lead rule: slot 0's image is just further than the lead behind the nearest other image
    lead = replace(limits, lead=float(exact_image.max() - exact_image[0]) - 1e-6)
    table.tau_text[0] -= 0.01
    assert int(match(q, v, has, table, lead).slot[0]) == NO_SLOT
    assert int(match(q, v, has, table, lead, scan).slot[0]) == NO_SLOT


def test_an_input_showing_a_slots_own_image_takes_no_other_slots_shared_write() -> None:
    from dataclasses import replace

    from editscope.editors.scopememory.router import build_scan

    # slot 1's image is within the lead of slot 0's (cos 0.90); only slot 0 matches the question asked
    table = slots(text=[[1, 0, 0], [0.6, 0.8, 0]], image=[[1, 0, 0], [0.9, 0.4359, 0]], has_image=[True, True],
                  shared=[True, True], tau_text=0.7, tau_image=0.5)
    q = unit([1, 0, 0], [1, 0, 0], [1, 0, 0])
    # 0: slot 1's own image; 1: a picture halfway between the two (cos 0.975 to each); 2: slot 0's own
    v = torch.cat([table.image[1:2], unit([0.9748, 0.2233, 0]), table.image[:1]])
    has = torch.ones(3, dtype=torch.bool)
    assert match(q, v, has, table, LIMITS).slot.tolist() == [0, 0, 0]  # no lead: all take slot 0's write
    lead = replace(LIMITS, lead=0.15)
    route = match(q, v, has, table, lead)
    # 0 shows slot 1's instance, so not slot 0's shared write, though it is within the lead
    assert route.slot.tolist() == [NO_SLOT, 0, 0]
    assert route.local.tolist() == [False, False, True]
    assert torch.equal(match(q, v, has, table, lead, build_scan(table)).slot, route.slot)
    # with slot 1 gone nothing claims the image, and slot 0's lead lets it in again
    gone = replace(table, active=torch.tensor([True, False]))
    assert match(q, v, has, gone, lead).slot.tolist() == [0, 0, 0]
