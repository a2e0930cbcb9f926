"""Each metric on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from editscope.evaluation import metrics as M


def _logits(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_token_accuracy() -> None:
    assert M.token_accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == pytest.approx(0.75)
    assert M.token_accuracy(torch.tensor([5]), torch.tensor([5])) == 1.0
    with pytest.raises(ValueError):
        M.token_accuracy([1, 2], [1])
    with pytest.raises(ValueError):
        M.token_accuracy([], [])


def test_probe_outputs_and_locality_variants() -> None:
    # 3 positions, vocabulary 4; the answer is predicted at positions 1 and 2.
    before = _logits([[4, 3, 2, 1], [0, 5, 1, 2], [1, 0, 0, 9]])
    after = _logits([[3, 4, 2, 1], [0, 5, 1, 2], [9, 0, 0, 1]])
    pos = torch.tensor([1, 2])
    ref, cur = M.probe_outputs(before, pos, k=2), M.probe_outputs(after, pos, k=2)
    assert ref.answer_top1.tolist() == [1, 3]
    assert ref.full_top1.tolist() == [0, 1, 3]
    assert ref.full_topk.tolist() == [[0, 1], [1, 3], [3, 0]]
    assert cur.full_topk.tolist() == [[1, 0], [1, 3], [0, 3]]
    loc = M.locality(ref, cur)
    assert loc.answer_top1 == pytest.approx(0.5)       # position 2 flipped 3 -> 0
    assert loc.full_top1 == pytest.approx(1 / 3)       # positions 0 and 2 flipped
    assert loc.full_topk == pytest.approx(2 / 6)       # ranks compared one by one
    assert loc.changed
    same = M.locality(ref, ref)
    assert (same.answer_top1, same.full_top1, same.full_topk) == (1.0, 1.0, 1.0)
    assert not same.changed


def test_agreement_shape_checks() -> None:
    with pytest.raises(ValueError):
        M.agreement(torch.tensor([1, 2]), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError):
        M.probe_outputs(torch.zeros(1, 2, 3), torch.tensor([0]))


def test_exact_match_normalisation() -> None:
    assert M.exact_match(" Paris.", "paris") == 1.0
    assert M.exact_match("New  York", "new york") == 1.0
    assert M.exact_match("Paris is", "Paris") == 0.0
    assert M.exact_match("", "Paris") == 0.0


def test_in_scope_transfer_mean() -> None:
    assert M.in_scope_transfer(1.0, 0.5) == pytest.approx(0.75)
    assert M.in_scope_transfer(1.0, None, [0.0, 0.5]) == pytest.approx(0.5)
    assert M.in_scope_transfer(None, None) is None


@pytest.mark.parametrize("rel, transfer, leaked, expected", [
    (1.0, 0.75, False, "proper"),
    (1.0, 0.5, False, "proper"),   # at the threshold counts as transferring
    (1.0, 0.49, False, "under"),
    (1.0, 0.9, True, "over"),
    (1.0, 0.1, True, "entangled"),
    (0.5, 1.0, False, None),       # not reliable: not classified
    (1.0, None, False, None),      # no in-scope probe
])
def test_classify_scope(rel, transfer, leaked, expected) -> None:
    assert M.classify_scope(rel, transfer, leaked) == expected


def test_classify_scope_threshold() -> None:
    assert M.classify_scope(1.0, 0.6, False, threshold=0.8) == "under"
    with pytest.raises(ValueError):
        M.classify_scope(1.0, 0.6, False, threshold=1.5)


def test_scope_shares() -> None:
    shares = M.scope_shares(["proper", "proper", "under", "over", None, "entangled", "proper", "proper"])
    assert shares == {"proper_share": 4 / 7, "under_share": 1 / 7, "over_share": 1 / 7,
                      "entangled_share": 1 / 7}
    assert M.scope_shares([None]) == {f"{c}_share": None for c in M.SCOPE_CLASSES}
    with pytest.raises(ValueError):
        M.scope_shares(["wide"])


def test_leak_rate_and_helpers() -> None:
    assert M.leak_rate([True, False, False, False]) == 0.25
    assert M.leak_rate([]) is None
    assert M.mean_or_none([1.0, None, 0.0]) == 0.5
    assert M.mean_or_none([None]) is None
    assert M.quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.95) == pytest.approx(4.8)
    assert M.quantile([], 0.5) is None
    assert M.median_or_none([3.0, 1.0, 2.0]) == 2.0
