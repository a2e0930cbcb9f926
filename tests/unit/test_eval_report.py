"""Aggregates and report files from hand-made runs (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from editscope.evaluation.plots import tradeoff_point, write_plots
from editscope.evaluation.protocol import EditorRun, ProtocolConfig
from editscope.evaluation.report import (
    MAIN_METRICS, aggregate, build_results, window_size, write_results, write_summary,
)


def _row(i: int, rel: float, t_gen: float, leaked: bool, scope: str | None, time_s: float) -> dict:
    return {"edit_index": i, "case_id": i, "fact_id": f"f{i}", "round": 0, "edit_time_s": time_s,
            "steps": 2, "state_bytes": 100, "peak_rss_bytes": 1 << 20, "rel": rel, "exact_match": rel,
            "t_gen": t_gen, "m_gen": 1.0, "t_loc": 1.0, "m_loc": 0.0 if leaked else 1.0,
            "m_loc_full_top10": 0.9, "near_miss_leak": 1.0 if leaked else 0.0, "transfer": t_gen,
            "other_fact_loc": 0.0 if leaked else 1.0,
            "leaked": leaked, "scope_class": scope}


def _run(name: str) -> EditorRun:
    rows = [_row(0, 1.0, 1.0, False, "proper", 0.1), _row(1, 1.0, 0.0, True, "entangled", 0.3),
            _row(2, 0.5, 1.0, False, None, 0.2)]
    return EditorRun(name=name, config={"lr": 1.0}, edits=rows,
                     retention={1: rows[:1], 3: rows}, fwd_bwd_s=0.05)


def test_aggregate_hand_computed() -> None:
    run = _run("x")
    agg = aggregate(run.edits, [0.1, 0.3, 0.2])
    assert set(MAIN_METRICS) <= set(agg)
    assert agg["rel"] == pytest.approx(2.5 / 3)
    assert agg["t_gen"] == pytest.approx(2 / 3)
    assert agg["m_loc"] == pytest.approx(2 / 3)
    assert agg["near_miss_leak"] == pytest.approx(1 / 3)
    assert agg["other_fact_loc"] == pytest.approx(2 / 3)
    assert agg["proper_share"] == 0.5 and agg["entangled_share"] == 0.5 and agg["under_share"] == 0.0
    assert agg["edit_time_median_s"] == pytest.approx(0.2)
    assert agg["port"] is None and agg["text_transfer"] is None
    assert agg["n_classified"] == 2 and agg["n_scored"] == 3


def test_window_size() -> None:
    assert window_size(1000) == 100 and window_size(5000) == 100
    assert window_size(50) == 5 and window_size(3) == 1


def test_results_summary_and_plots(tmp_path: Path) -> None:
    cfg = ProtocolConfig(checkpoints=(1, 10))
    checkpoints = cfg.checkpoints_for(3)
    assert checkpoints == (1, 3)
    config = {"model": "tiny", "data": "x", "edits": 3, "seed": 0, "preset": None,
              "checkpoints": list(checkpoints), "scope_threshold": 0.5}
    results = build_results([_run("a"), _run("b")], checkpoints, config, [{"case_id": 0}],
                            "editscope bench --edits 3", "2026-01-01T00:00:00Z")
    path = write_results(results, tmp_path)
    loaded = json.loads(path.read_text())
    assert loaded["command"] == "editscope bench --edits 3"
    ret = loaded["editors"]["a"]["retention"]
    assert set(ret) == {"1", "3"}
    assert ret["1"]["rel"] == 1.0 and ret["3"]["rel"] == pytest.approx(2.5 / 3)
    assert loaded["editors"]["a"]["online"]["1"]["edit_time_median_s"] == pytest.approx(0.1)
    cost = loaded["editors"]["a"]["cost"]
    assert cost["edit_time_start_median_s"] == pytest.approx(0.1)
    assert cost["edit_time_end_median_s"] == pytest.approx(0.2)
    assert cost["overhead_ratio"] == pytest.approx(2.0)  # median of 0.1/0.1, 0.3/0.1, 0.2/0.1
    md = write_summary(results, tmp_path).read_text()
    assert "editscope bench --edits 3" in md
    assert "## Retention after 1 edits" in md and "## Retention after 3 edits" in md
    assert md.count("| a |") >= 3 and "| b |" in md
    assert "| M-Loc@10 full | Other fact | Near-miss leak |" in md
    for png in write_plots(results, tmp_path):
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_tradeoff_point() -> None:
    assert tradeoff_point({"t_loc": 1.0, "m_loc": 0.5, "near_miss_leak": 0.25, "t_gen": 1.0,
                           "m_gen": 0.0, "text_transfer": None}) == (pytest.approx(0.75), 0.5)
    assert tradeoff_point({}) == (None, None)


def _results(names: list[str], seed: int = 0) -> dict:
    config = {"model": "tiny", "data": "x", "edits": 3, "seed": seed, "preset": None, "checkpoints": [1, 3],
              "scope_threshold": 0.5, "editor_configs": {n: {} for n in names}}
    return build_results([_run(n) for n in names], (1, 3), config, [{"case_id": 0}], f"bench {names}", "t")


def test_merge_results_from_separate_processes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from editscope.cli.main import app
    from editscope.evaluation.merge import merge_results

    merged = merge_results([_results(["a", "b"]), _results(["c"])], "merge", "t")
    assert list(merged["editors"]) == ["a", "b", "c"]
    assert merged["config"]["editors"] == ["a", "b", "c"]
    assert merged["config"]["merged_from"] == ["bench ['a', 'b']", "bench ['c']"]
    with pytest.raises(ValueError, match="'seed'"):
        merge_results([_results(["a"]), _results(["c"], seed=1)], "merge", "t")
    with pytest.raises(ValueError, match="more than one"):
        merge_results([_results(["a"]), _results(["a"])], "merge", "t")
    # a file written before --facts and --sibling-anchors existed merges with one that has their defaults
    newer = _results(["c"])
    newer["config"].update(facts=None, sibling_anchors=False)
    assert list(merge_results([_results(["a"]), newer], "merge", "t")["editors"]) == ["a", "c"]
    newer["config"]["sibling_anchors"] = True
    with pytest.raises(ValueError, match="'sibling_anchors': True != False"):
        merge_results([_results(["a"]), newer], "merge", "t")
    other = _results(["c"])
    other["stream"] = [{"case_id": 1}]
    with pytest.raises(ValueError, match="different stream"):
        merge_results([_results(["a"]), other], "merge", "t")

    paths = []
    for i, names in enumerate((["a"], ["b"])):
        paths.append(str(write_results(_results(names), tmp_path / f"part{i}")))
    result = CliRunner().invoke(app, ["bench-merge", *paths, "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    loaded = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert list(loaded["editors"]) == ["a", "b"]
    assert loaded["command"].startswith("editscope bench-merge ") and paths[0] in loaded["command"]
    summary = (tmp_path / "merged" / "summary.md").read_text()
    assert "| a |" in summary and "| b |" in summary and "Merged from" in summary
    assert (tmp_path / "merged" / "scope_tradeoff.png").is_file()
    bad = CliRunner().invoke(app, ["bench-merge", paths[0], paths[0], "--out", str(tmp_path / "m2")])
    assert bad.exit_code == 2 and "more than one" in bad.output


def test_a_re_run_editor_replaces_its_run_in_a_merge(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from editscope.cli.main import app
    from editscope.evaluation.merge import merge_results

    published = merge_results([_results(["a", "b"]), _results(["c"])], "merge", "t")
    rerun = _results(["b"])
    rerun["editors"]["b"]["online"]["1"]["rel"] = 0.25
    rerun["config"]["editor_configs"]["b"] = {"eta": 2.0}
    merged = merge_results([published, rerun], "merge again", "t", replace=True)
    assert list(merged["editors"]) == ["a", "b", "c"]  # the re-run editor keeps its place
    assert merged["editors"]["b"]["online"]["1"]["rel"] == 0.25
    assert merged["editors"]["a"] == published["editors"]["a"]
    assert merged["config"]["editor_configs"]["b"] == {"eta": 2.0}
    assert merged["config"]["merged_from"] == ["bench ['a', 'b']", "bench ['c']", "bench ['b']"]
    assert merged["config"]["replaced"] == [{"editor": "b", "by": "bench ['b']"}]
    with pytest.raises(ValueError, match="--replace"):
        merge_results([published, rerun], "merge again", "t")

    paths = [str(write_results(published, tmp_path / "published")), str(write_results(rerun, tmp_path / "b"))]
    result = CliRunner().invoke(app, ["bench-merge", *paths, "--replace", "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    summary = (tmp_path / "merged" / "summary.md").read_text()
    assert "Replaced: `b`" in summary and "--replace" in json.loads(
        (tmp_path / "merged" / "results.json").read_text())["command"]


def test_results_file_rounds_floats_and_writes_null_for_non_finite(tmp_path) -> None:
    path = write_results({"score": 1 / 3, "big": 123456789.123, "bad": float("nan"), "rows": [{"x": 2.0}]}, tmp_path)
    back = json.loads(path.read_text())
    assert back == {"score": 0.3333333, "big": 123456800.0, "bad": None, "rows": [{"x": 2.0}]}


def test_goals_section_says_which_goals_are_met() -> None:
    from editscope.evaluation.report import goals_section

    scope = {"rel": 0.96, "t_gen": 0.5, "m_gen": 0.5, "text_transfer": 0.2, "t_loc": 0.9, "m_loc": 0.9,
             "near_miss_leak": 0.04, "proper_share": None}
    more = {**scope, "t_gen": 0.4, "m_gen": 0.4, "t_loc": 0.95}
    results = {"editors": {"scopeedit": {"retention": {"100": scope}}, "more": {"retention": {"100": more}}}}
    lines = goals_section(results, "100")
    table = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ")}
    assert table["rel"].endswith("| met |") and table["near_miss_leak"].endswith("| met |")
    assert table["t_gen"].endswith("| **missed** |") and table["proper_share"].endswith("| n/a |")
    # transfer 0.4 vs 0.333 (ahead), locality (0.9+0.9+0.96)/3 = 0.92 vs 0.937: not equal or better
    verdict = next(line for line in lines if line.startswith("In-scope transfer"))
    assert "scopeedit 0.400, more 0.333" in verdict and verdict.endswith("**missed**.")
    results["editors"]["more"]["retention"]["100"]["t_loc"] = 0.85
    assert next(x for x in goals_section(results, "100") if x.startswith("In-scope")).endswith(": met.")
    assert goals_section({"editors": {"more": {"retention": {"100": more}}}}, "100") == []


def test_scopememory_is_judged_against_its_own_goals_and_grace() -> None:
    from editscope.evaluation.report import EDITOR_GOALS, goals_section

    memory = {"rel": 0.96, "t_gen": 0.9, "m_gen": 0.8, "text_transfer": 0.1, "t_loc": 1.0, "m_loc": 0.96,
              "other_fact_loc": 0.95, "near_miss_leak": 0.05, "proper_share": 0.8}
    grace = {**memory, "t_gen": 0.5, "m_gen": 0.4}
    results = {"editors": {"scopememory": {"retention": {"1000": memory}}, "grace": {"retention": {"1000": grace}}}}
    goals, rival = EDITOR_GOALS["scopememory"]
    lines = goals_section(results, "1000", "scopememory", rival, goals)
    assert lines[0] == "## Goals for scopememory (retention after 1000 edits)"
    table = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ")}
    # rel 0.96 meets ScopeEdit's 0.95 but not ScopeMemory's 0.97; m_loc 0.96 likewise
    assert table["rel"].endswith("| **missed** |") and table["m_loc"].endswith("| **missed** |")
    assert table["m_gen"].endswith("| met |") and table["other_fact_loc"].endswith("| met |")
    assert table["near_miss_leak"].endswith("| met |") and table["text_transfer"].endswith("| **missed** |")
    assert next(x for x in lines if x.startswith("In-scope")).startswith("In-scope transfer (mean of t_gen, m_gen, "
                                                                       "text_transfer): scopememory")
    assert "grace" in next(x for x in lines if x.startswith("In-scope"))


def _aged_entry() -> dict:
    # a stream of 40 edits over facts f0..f3; a fact's latest edit decides its age
    facts = {"f0": [0, 33], "f1": [15], "f2": [2], "f3": [39]}
    online = {"f0": 1.0, "f1": 1.0, "f2": 1.0, "f3": 0.5}  # f3's latest edit was not absorbed
    edits = [{"edit_index": i, "fact_id": "pad", "rel": 1.0, "edit_time_s": 0.1} for i in range(40)]
    for fact, indices in facts.items():
        for i in indices:
            edits[i] = {"edit_index": i, "fact_id": fact, "rel": online[fact], "edit_time_s": 0.1}
    edits[0]["rel"] = 0.0  # f0's first edit did not land; its latest did
    final = {"f0": 1.0, "f1": 0.5, "f2": 0.0, "f3": 1.0, "pad": 1.0}
    rows = [{"fact_id": f, "rel": final[f]} for f in ("f0", "f1", "f2", "f3")]
    return {"edits": edits, "retention_rows": {"40": rows}}


def test_retention_by_age_hand_computed() -> None:
    from editscope.evaluation.report import retention_by_age

    table = retention_by_age(_aged_entry(), "40")
    # ages of the latest edits: f0 40 - 33 = 7, f1 25, f2 38; f3 is left out (online Rel 0.5)
    assert table == [("1-10", 1.0, 1), ("11-30", 0.5, 1), ("31+", 0.0, 1)]


def test_forgetting_table_plot_and_report_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from editscope.cli.main import app
    from editscope.evaluation.report import forgetting_section

    results = {"command": "bench", "created": "t", "stream": [],
               "config": {"model": "tiny", "data": "x", "edits": 40, "checkpoints": [40]},
               "editors": {"a": {**_aged_entry(), "retention": {}, "online": {},
                                 "cost": {"window": 4, "edit_time_median_s": 0.1, "edit_time_p95_s": 0.1,
                                          "edit_time_start_median_s": 0.1, "edit_time_end_median_s": 0.1,
                                          "fwd_bwd_s": None, "overhead_ratio": None, "rss_max_bytes": None,
                                          "state_bytes_first": None, "state_bytes_last": None,
                                          "rejected_edits": 0}}}}
    lines = forgetting_section(results, "40")
    assert "| a | 1.000 (1) | 0.500 (1) | 0.000 (1) |" in lines
    path = write_results(results, tmp_path / "run")
    result = CliRunner().invoke(app, ["bench-report", str(path)])
    assert result.exit_code == 0, result.output
    assert "Forgetting" in (tmp_path / "run" / "summary.md").read_text()
    assert (tmp_path / "run" / "forgetting.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(path.read_text())["command"] == "bench"  # the results are not rewritten
    (tmp_path / "bad.json").write_text("{not json")
    bad = CliRunner().invoke(app, ["bench-report", str(tmp_path / "bad.json")])
    assert bad.exit_code == 2 and "bad.json" in bad.output


def test_gate_summary_hand_computed() -> None:
    from editscope.evaluation.report import gate_section, gate_summary

    gate = lambda cos, support, g: {"cos": cos, "support": support, "g": g}  # noqa: E731
    entry = {"edits": [{"gates": {"layer.2": gate(0.5, 0.8, 0.3), "layer.3": gate(0.1, 0.6, 0.01)}},
                       {"gates": {}},
                       {"gates": {"layer.2": gate(0.9, 1.0, 0.2)}}]}
    summary = gate_summary(entry)
    assert summary["gates"] == 3
    assert summary["cos"] == pytest.approx(0.5) and summary["support"] == pytest.approx(0.8)
    assert summary["g"] == pytest.approx(0.17) and summary["open_share"] == pytest.approx(2 / 3)
    assert gate_summary(entry, open_at=0.25)["open_share"] == pytest.approx(1 / 3)
    assert gate_summary({"edits": [{"gates": {}}, {}]}) is None
    lines = gate_section({"editors": {"scopeedit": entry, "lora": {"edits": [{}]}}})
    assert "| scopeedit | 3 | 0.500 | 0.800 | 0.170 | 0.667 |" in lines
    assert not any(line.startswith("| lora") for line in lines)
