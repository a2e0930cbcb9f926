"""A short ``editscope bench`` run on the tiny LLaVA (saved to disk, loaded by path), with
world-format records written here: all three outputs, and what each editor did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import build_tiny
from typer.testing import CliRunner

from editscope.cli.main import app
from editscope.editors.base import Editor
from editscope.editors.baselines import EDITORS
from editscope.evaluation.data import load_records
from editscope.evaluation.stream import build_stream
from editscope.evaluation.protocol import ProtocolConfig, run_comparison
from editscope.evaluation.report import MAIN_METRICS
from editscope.models import VisionLanguageModel
from editscope.types import EditRequest, EditResult

QUESTION = "what color is the object in the image ?"
UNDER_TEST = tuple(EDITORS)
N_EDITS = 4          # 3 records: the 4th edit re-edits a fact to a new value
CHECKPOINTS = "1,2"  # plus the last edit, 4


def _image(path: Path, seed: int) -> str:
    pixels = np.random.RandomState(seed).randint(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path.name


def _records(root: Path) -> Path:
    answers = ["purple banana", "green tree", "blue bird"]
    records = []
    for i, alt in enumerate(answers):
        records.append({
            "src": QUESTION, "pred": "red", "alt": alt, "rephrase": "what is this ?",
            "image": _image(root / f"edit{i}.png", 10 * i), "image_rephrase": _image(root / f"rephrase{i}.png", 10 * i + 1),
            "loc": "who made it ?", "loc_ans": "a dog", "m_loc": _image(root / f"mloc{i}.png", 10 * i + 2),
            "m_loc_q": "how many are there ?", "m_loc_a": "three", "text_only_q": f"where is the cat {i} ?",
            "near_miss_image": _image(root / f"near{i}.png", 10 * i + 3), "near_miss_a": "red",
            "other_fact_q": "who made it ?", "other_fact_a": "a car", "fact": "color", "record_id": f"t-{i}",
        })
    path = root / "edits.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    """One thread: the tiny model gains nothing from more, and a busy machine loses a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, processor = build_tiny("LlavaForConditionalGeneration", seed=0)
    directory = tmp_path_factory.mktemp("tiny_llava")
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _records(tmp_path_factory.mktemp("records"))


@pytest.fixture(scope="module")
def bench_out(tiny_dir: Path, records: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(app, [
        "bench", "--model", str(tiny_dir), "--data", f"world:{records}", "--editors", ",".join(UNDER_TEST),
        "--edits", str(N_EDITS), "--checkpoints", CHECKPOINTS, "--preset", "tiny", "--out", str(out),
        "--threads", "1", "--quiet",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


def test_outputs_written(bench_out: Path) -> None:
    results = json.loads((bench_out / "results.json").read_text())
    assert results["command"].startswith("editscope bench --data world:")
    assert "--edits 4" in results["command"] and "--preset tiny" in results["command"]
    assert results["config"]["threads"] == 1
    assert results["config"]["checkpoints"] == [1, 2, 4]
    assert [row["round"] for row in results["stream"]] == [0, 0, 0, 1]
    assert list(results["editors"]) == list(UNDER_TEST)
    for name, entry in results["editors"].items():
        assert len(entry["edits"]) == N_EDITS
        for block in ("online", "retention"):
            assert set(entry[block]) == {"1", "2", "4"}
            for agg in entry[block].values():
                assert set(MAIN_METRICS) <= set(agg)
                for key in ("rel", "t_gen", "m_gen", "t_loc", "m_loc", "exact_match", "text_transfer",
                            "near_miss_leak", "edit_time_median_s"):
                    assert agg[key] is not None, (name, block, key)
        assert entry["retention"]["4"]["n_scored"] == 3  # three facts, the re-edited one at its latest value
        assert entry["cost"]["edit_time_start_median_s"] > 0
    summary = (bench_out / "summary.md").read_text()
    assert results["command"] in summary
    for n in (1, 2, 4):
        assert f"## Retention after {n} edits" in summary
    for name in UNDER_TEST:
        assert f"| {name} |" in summary
    for png in ("metrics_vs_edits.png", "scope_tradeoff.png", "edit_time.png", "forgetting.png"):
        data = (bench_out / png).read_bytes()
        assert data[:4] == b"\x89PNG" and len(data) > 1000


def test_each_editor_changes_the_edited_answer_and_none_does_not(bench_out: Path) -> None:
    editors = json.loads((bench_out / "results.json").read_text())["editors"]
    for name, entry in editors.items():
        first = entry["edits"][0]
        if name == "none":
            assert first["loss_after"] == first["loss_before"]
            assert entry["online"]["4"]["t_loc"] == 1.0 and entry["online"]["4"]["m_loc"] == 1.0
            assert entry["retention"]["4"]["near_miss_leak"] == 0.0
            assert entry["cost"]["state_bytes_last"] == 0
        else:
            assert first["loss_after"] < first["loss_before"] - 0.1, name
            assert first["rel"] > 0.0, name
            assert entry["cost"]["state_bytes_last"] > 0, name
        if name in ("scopeedit", "more"):
            assert all(row["active_groups"] for row in entry["edits"]), name
        if name == "scopeedit":  # the evidence gate of every shared group, every edit
            for row in entry["edits"]:
                assert row["gates"], row
                for gate in row["gates"].values():
                    assert -1.0 <= gate["cos"] <= 1.0 and 0.0 <= gate["support"] <= 1.0 and 0.0 <= gate["g"] <= 1.0
        elif name == "scopememory":  # the gate decides, per edit, whether the shared write may fire
            gates = [g for row in entry["edits"] for g in row.get("gates", {}).values()]
            assert gates and all(0.0 <= g["g"] <= 1.0 for g in gates), name
        else:
            assert all("gates" not in row for row in entry["edits"]), name


class _WritesBaseWeights(Editor):
    """A broken editor: changes a base weight in place and never undoes it."""

    name = "broken"

    def edit(self, request: EditRequest) -> EditResult:
        with torch.no_grad():
            self.vlm.model.get_input_embeddings().weight.mul_(1.5)
        return EditResult(edit_id=1, loss_before=0.0, loss_after=0.0, active_groups=())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def config_dict(self) -> dict:
        return {}


def test_model_is_restored_between_editors_and_damage_is_caught(tiny_dir: Path, records: Path) -> None:
    from editscope.models import load

    vlm: VisionLanguageModel = load(tiny_dir)
    stream = build_stream(load_records("world", records), 1)
    request = stream[0].request
    before = vlm.logits(request.image, request.prompt, request.target)
    config = ProtocolConfig(checkpoints=(1,), exact_match=False, progress=False)
    factories = {name: (lambda v, n=name: EDITORS[n].editor(v, None)) for name in ("lora", "grace")}
    runs = run_comparison(vlm, stream, factories, config)
    assert [r.name for r in runs] == ["lora", "grace"]
    assert torch.equal(vlm.logits(request.image, request.prompt, request.target), before)
    assert all(type(m).__name__ not in ("LoRALinear", "GraceCodebook") for m in vlm.model.modules())
    with pytest.raises(RuntimeError, match="after editor 'broken'"):
        run_comparison(vlm, stream, {"broken": _WritesBaseWeights}, config)


def test_recursive_editors_take_the_record_locality_pair_as_anchors(tiny_dir: Path, records: Path) -> None:
    """The bench passes each record's locality pair (a text-only question and an image
    question) as the edit's anchors (docs/method.md, step 8)."""
    from editscope.config import load_preset
    from editscope.editors.recursive import MORE, ScopeEdit
    from editscope.models import load

    vlm = load(tiny_dir)
    (case,) = build_stream(load_records("world", records), 1)
    request = EditRequest(case.request.prompt, case.request.target, case.request.image,
                          anchors=(case.loc, case.m_loc))
    for cls in (ScopeEdit, MORE):
        editor = cls(vlm, load_preset("tiny"))
        try:
            result = editor.edit(request)
        finally:
            editor.remove()
        assert result.loss_after < result.loss_before


def test_an_editor_variant_runs_beside_its_editor(tiny_dir: Path, records: Path, tmp_path: Path) -> None:
    overrides = tmp_path / "editors.yaml"
    overrides.write_text("scopeedit@release:\n  reedit: release\n")
    result = CliRunner().invoke(app, [
        "bench", "--model", str(tiny_dir), "--data", f"world:{records}", "--editors", "scopeedit,scopeedit@release",
        "--edits", str(N_EDITS), "--checkpoints", CHECKPOINTS, "--preset", "tiny", "--out", str(tmp_path / "out"),
        "--editor-config", str(overrides), "--threads", "1", "--quiet", "--no-exact-match",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(results["editors"]) == ["scopeedit", "scopeedit@release"]
    configs = results["config"]["editor_configs"]
    # the paper's re-edit rule ('protect') is the section left out; the variant's is its own section
    assert configs["scopeedit"]["reedit"] is None and configs["scopeedit@release"]["reedit"]["rule"] == "release"
    assert "scopeedit@release" in (tmp_path / "out" / "summary.md").read_text()


def test_reference_prior_in_a_bench_run(tiny_dir: Path, records: Path, tmp_path: Path) -> None:
    """A variant with ``reference_weight`` folds the reference file before its stream; the same
    editor without it runs beside it on the same stream. A model without a world and no
    ``--reference`` is refused before any editor runs."""
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps([
        {"prompt": "who made it ?", "answer": "a dog"},
        {"prompt": QUESTION, "answer": "red", "image": _image(tmp_path / "ref0.png", 99)},
    ]))
    overrides = tmp_path / "editors.yaml"
    overrides.write_text("more@prior:\n  reference_weight: 1000.0\n  reference_size: 2\n")
    args = ["bench", "--model", str(tiny_dir), "--data", f"world:{records}", "--editors", "more,more@prior",
            "--edits", "3", "--checkpoints", "3", "--preset", "tiny", "--editor-config", str(overrides),
            "--threads", "1", "--quiet", "--no-exact-match"]
    refused = CliRunner().invoke(app, args + ["--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2 and "not trained on a world" in refused.output
    assert not (tmp_path / "refused" / "results.json").exists()
    result = CliRunner().invoke(app, args + ["--reference", str(reference), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["reference"] == str(reference)
    assert results["config"]["editor_configs"]["more@prior"]["prior"] == {"weight": 1000.0, "size": 2}
    plain, prior = results["editors"]["more"], results["editors"]["more@prior"]
    # the same edits, but the prior damps the steps: the first edit's loss falls by less
    assert plain["edits"][0]["loss_before"] == pytest.approx(prior["edits"][0]["loss_before"])
    assert plain["edits"][0]["loss_after"] != pytest.approx(prior["edits"][0]["loss_after"])


def test_a_reference_no_editor_uses_is_reported(tiny_dir: Path, records: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps([{"prompt": "who made it ?", "answer": "a dog"}]))
    result = CliRunner().invoke(app, [
        "bench", "--model", str(tiny_dir), "--data", f"world:{records}", "--editors", "more", "--edits", "2",
        "--checkpoints", "2", "--preset", "tiny", "--reference", str(reference), "--out", str(tmp_path / "out"),
        "--threads", "1", "--quiet", "--no-exact-match",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"--reference {reference} is unused" in result.output


def test_facts_limits_the_stream_to_the_first_records(tiny_dir: Path, records: Path, tmp_path: Path) -> None:
    """``--facts 2``: a 5-edit stream over the first two records only (three re-edits), recorded
    in the results (with the --sibling-anchors flag); more facts than records is refused before
    any editor runs."""
    args = ["bench", "--model", str(tiny_dir), "--data", f"world:{records}", "--editors", "none", "--edits", "5",
            "--checkpoints", "5", "--preset", "tiny", "--threads", "1", "--quiet", "--no-exact-match"]
    result = CliRunner().invoke(app, args + ["--facts", "2", "--sibling-anchors", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["facts"] == 2 and results["config"]["sibling_anchors"] is True
    fact_ids = [row["fact_id"] for row in results["stream"]]
    assert len(fact_ids) == 5 and len(set(fact_ids)) == 2
    assert set(fact_ids) == set(fact_ids[:2])
    assert sum(row["previous_target"] is not None for row in results["stream"]) == 3
    assert "facts: the first 2 records" in (tmp_path / "out" / "summary.md").read_text()
    refused = CliRunner().invoke(app, args + ["--facts", "4", "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2 and "--facts 4: the data has only 3 records" in refused.output
    assert not (tmp_path / "refused" / "results.json").exists()
