"""``EditResult``'s one serialisation: ``to_dict`` (journal, service, bench) and ``from_dict``."""

from __future__ import annotations

import json

from editscope.types import EditResult, GateValues


def _result() -> EditResult:
    return EditResult(
        edit_id=7, loss_before=3.25, loss_after=0.0625, active_groups=("decoder.2", "decoder.0"),
        gates={"decoder.2": GateValues(cos=0.5, support=0.75, g=0.125), "decoder.0": GateValues(0.0, 1.0, 0.0)},
        wall_time_s=1.5, steps=4, rehearsed=2,
    )


def test_to_dict_is_the_journal_format() -> None:
    # The keys, their order and their values as stored journals hold them (what
    # store/replay.py's result_to_dict wrote before): a change here breaks old stores.
    data = _result().to_dict()
    assert data == {
        "editor_edit_id": 7, "loss_before": 3.25, "loss_after": 0.0625,
        "active_groups": ["decoder.2", "decoder.0"],
        "gates": {"decoder.2": {"cos": 0.5, "support": 0.75, "g": 0.125},
                  "decoder.0": {"cos": 0.0, "support": 1.0, "g": 0.0}},
        "wall_time_s": 1.5, "steps": 4, "rehearsed": 2,
    }
    assert list(data) == ["editor_edit_id", "loss_before", "loss_after", "active_groups", "gates",
                          "wall_time_s", "steps", "rehearsed"]
    assert list(data["gates"]["decoder.2"]) == ["cos", "support", "g"]


def test_round_trip_through_json() -> None:
    result = _result()
    text = json.dumps(result.to_dict())
    back = EditResult.from_dict(json.loads(text))
    assert back == result
    assert json.dumps(back.to_dict()) == text


def test_round_trip_of_a_result_without_gates_or_groups() -> None:
    result = EditResult(edit_id=1, loss_before=float("nan"), loss_after=2.0, active_groups=())
    back = EditResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.loss_before != back.loss_before  # NaN survives
    assert (back.edit_id, back.loss_after, back.active_groups, back.gates, back.steps, back.rehearsed) == \
        (1, 2.0, (), {}, 0, 0)


def test_from_dict_reads_a_journal_row() -> None:
    # A journal row's result also holds the answers to its never examples; a row written before
    # ``rehearsed`` was kept has none (read as 0).
    row = {**_result().to_dict(), "never_before": ["a cat"]}
    assert EditResult.from_dict(row) == _result()
    del row["rehearsed"]
    assert EditResult.from_dict(row).rehearsed == 0
