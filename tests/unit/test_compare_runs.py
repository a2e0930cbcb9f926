"""scripts/compare_runs.py: two bench runs agree only when every per-edit loss, step and score is
equal; wall times and memory are left out."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_runs.py"
spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT)
compare_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_runs)


def run() -> dict:
    row = {"edit_index": 0, "steps": 3, "loss_before": 2.5, "loss_after": 0.05, "rel": 1.0, "m_gen": 0.5,
           "state_bytes": 1024, "edit_time_s": 0.31, "rss_bytes": 10, "gates": {"decoder.1": {"g": 0.0}}}
    editor = {"edits": [row, {**row, "edit_index": 1}], "retention_rows": {"2": [{"rel": 1.0}]},
              "online": {"2": {"rel": 1.0, "edit_time_median_s": 0.3}}, "retention": {"2": {"rel": 1.0}},
              "cost": {"state_bytes_last": 1024, "edit_time_median_s": 0.3}}
    return {"stream": [{"case_id": 0, "image": "/tmp/a/data/images/test-0000-edit.png"}],
            "editors": {"scopeedit": editor, "grace": copy.deepcopy(editor)}}


def write(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_equal_runs_pass_even_when_their_times_and_memory_differ(tmp_path, capsys) -> None:
    before, after = run(), run()
    after["editors"]["scopeedit"]["edits"][0]["edit_time_s"] = 9.0
    after["editors"]["scopeedit"]["edits"][1]["rss_bytes"] = 99
    after["editors"]["grace"]["online"]["2"]["edit_time_median_s"] = 7.0
    after["stream"][0]["image"] = "/tmp/b/data/images/test-0000-edit.png"  # the run's own copy
    assert compare_runs.main([str(write(tmp_path, "a.json", before)), str(write(tmp_path, "b.json", after))]) == 0
    assert "scopeedit: identical (2 edits)" in capsys.readouterr().out


@pytest.mark.parametrize("change", [
    lambda r: r["editors"]["scopeedit"]["edits"][1].update(loss_after=0.0500001),
    lambda r: r["editors"]["scopeedit"]["edits"][0].update(steps=4),
    lambda r: r["editors"]["grace"]["edits"][1].update(m_gen=0.0),
    lambda r: r["editors"]["grace"]["edits"][1].update(state_bytes=1025),
    lambda r: r["editors"]["scopeedit"]["edits"][0]["gates"]["decoder.1"].update(g=1e-9),
    lambda r: r["editors"]["scopeedit"]["edits"].pop(),
    lambda r: r["editors"]["scopeedit"]["retention_rows"]["2"][0].update(rel=0.0),
    lambda r: r["editors"]["grace"]["retention"]["2"].update(rel=0.5),
    lambda r: r["editors"]["grace"]["cost"].update(state_bytes_last=1),
    lambda r: r["editors"].pop("grace"),
    lambda r: r["stream"][0].update(case_id=1),
    lambda r: r["stream"][0].update(image="/tmp/a/data/images/test-0001-edit.png"),
    lambda r: r["editors"]["scopeedit"]["edits"][0].update(loss_before=2),  # int 2 is not float 2.5
])
def test_any_difference_fails(tmp_path, capsys, change) -> None:
    before, after = run(), run()
    change(after)
    assert compare_runs.main([str(write(tmp_path, "a.json", before)), str(write(tmp_path, "b.json", after))]) == 1
    assert "differences" in capsys.readouterr().out


def test_a_float_is_not_equal_to_the_same_int() -> None:
    assert list(compare_runs.differences({"x": 1.0}, {"x": 1})) == ["x: 1.0 before, 1 after"]
    assert not list(compare_runs.differences({"x": float("nan")}, {"x": float("nan")}))
