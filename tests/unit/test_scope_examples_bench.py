"""``editscope bench --scope-examples N``: N more held-out renders of the edited subject
(``also``) and of its look-alike (``never``) per world edit, passed in the edit requests; the
scored probes and requests without the option exactly as before; records files, re-edits,
the editor check, ``results.json``, merges and the summary."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from editscope.cli.main import app
from editscope.editors.registry import EDITORS
from editscope.evaluation.bench import BenchSpec, _stream_rows, load_cases
from editscope.evaluation.data import DataError, EditCase, load_records
from editscope.evaluation.merge import merge_results
from editscope.evaluation.report import build_results, summary_markdown
from editscope.evaluation.stream import build_stream
from editscope.types import EditRequest, EditResult
from editscope.world import builtin_path, fixed_render, load_world
from editscope.world.edits import EDIT_RENDER, EXAMPLE_RENDER_START, LOCALITY_RENDER, REPHRASE_RENDER, example_render
from editscope.world.evaluate import HELDOUT_RENDERS

# Digests (``cases_digest``) of the world's cases as loaded by the bench before scope examples
# existed (commit 22e07a7): every request and every probe, images by their pixels.
GOLDEN = {
    "dev": "f2c9286dc6579eb9a15ba109d0b6f71fe5e28dec00b7dfe24df23084c0ae5a80",
    "test": "a32dfdde1f236bcde464577df121ac65fb9e6339331c07e617236f439a14cbb4",
    "dev-stream150": "7b7017c86c4595e397b020af4976d855562e1dc4fb7d47a6443ee26c8fb00947",
}
PROBE_FIELDS = ("rephrase", "image_rephrase", "loc", "m_loc")
PROBE_TUPLES = ("portability", "text_transfer", "near_miss", "other_fact", "siblings")


def image_digest(image: Any) -> str:
    if image is None:
        return "-"
    img = image if isinstance(image, Image.Image) else Image.open(image)
    return hashlib.sha256(img.convert("RGB").tobytes()).hexdigest()[:16]


def _probe_key(p: Any) -> tuple:
    return (p.prompt, p.answer, image_digest(p.image))


def cases_digest(cases: list[EditCase]) -> str:
    """A digest of everything the bench scores and every request field but the examples."""
    h = hashlib.sha256()
    for c in cases:
        r = c.request
        parts: list[Any] = [c.case_id, c.fact_id, c.record_index, c.group, c.round, c.previous_target,
                            r.prompt, r.target, image_digest(r.image), r.scope, r.fact_id,
                            [_probe_key(p) for p in r.anchors]]
        for name in PROBE_FIELDS:
            p = getattr(c, name)
            parts.append(None if p is None else _probe_key(p))
        for name in PROBE_TUPLES:
            parts.append([_probe_key(p) for p in getattr(c, name)])
        h.update(repr(parts).encode())
    return h.hexdigest()


def scored_images(case: EditCase) -> set[str]:
    """The pixel digests of every image the bench scores (or anchors) for ``case``."""
    images = [case.request.image, *(getattr(case, n).image for n in PROBE_FIELDS if getattr(case, n) is not None)]
    images += [p.image for n in PROBE_TUPLES for p in getattr(case, n)]
    return {image_digest(i) for i in images if i is not None}


@lru_cache(maxsize=None)
def _cached_cases(split: str, n: int, out: str) -> tuple[EditCase, ...]:
    spec = BenchSpec(model="builtin", data=f"world:{split}", out=Path(out) / f"{split}-{n}",
                     editors=("scopememory",) if n else ("none",), scope_examples=n)
    return tuple(load_cases(spec))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("world-cases"))


@pytest.fixture(autouse=True)
def scopememory_takes_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    """ScopeMemory uses examples (set here too, for the commits before it did: the bench asks
    only the class)."""
    monkeypatch.setattr(EDITORS["scopememory"].editor, "uses_examples", True)


def cases(split: str, n: int, cache_dir: str) -> list[EditCase]:
    return list(_cached_cases(split, n, cache_dir))


# -- the world's examples -------------------------------------------------------------------


def test_example_renders_lie_beyond_every_scored_render() -> None:
    indices = [example_render(kind, k) for k in range(10) for kind in ("also", "never")]
    assert len(set(indices)) == len(indices)
    assert min(indices) == EXAMPLE_RENDER_START >= HELDOUT_RENDERS
    assert not {EDIT_RENDER, REPHRASE_RENDER, LOCALITY_RENDER} & set(indices)
    for bad in (("also", -1), ("sometimes", 0)):
        with pytest.raises(ValueError):
            example_render(*bad)


@pytest.mark.parametrize("split", ["dev", "test"])
def test_without_the_option_the_cases_are_exactly_as_before(split: str, cache_dir: str) -> None:
    plain = cases(split, 0, cache_dir)
    assert cases_digest(plain) == GOLDEN[split]
    assert all(c.also == () and c.never == () for c in plain)
    if split == "dev":
        assert cases_digest(build_stream(plain, 150, seed=0)) == GOLDEN["dev-stream150"]
    records = json.loads(next((Path(cache_dir) / f"{split}-0").rglob(f"{split}.json")).read_text())
    assert not any("scope_also" in r or "scope_never" in r for r in records)


@pytest.mark.parametrize("split", ["dev", "test"])
def test_examples_change_no_scored_probe_and_are_never_a_scored_image(split: str, cache_dir: str) -> None:
    with_examples = cases(split, 3, cache_dir)
    assert cases_digest(with_examples) == GOLDEN[split]  # the scored probes and requests: unchanged
    scored = set().union(*(scored_images(c) for c in with_examples))
    examples = [image_digest(e.image) for c in with_examples for e in (*c.also, *c.never)]
    assert len(examples) == 6 * len(with_examples)
    assert not scored & set(examples)  # no example is any scored image of any record
    assert len(set(examples)) == len(examples)  # and every example is its own image
    world = load_world(builtin_path())
    for case in with_examples:
        assert len(case.also) == len(case.never) == 3
        assert all(e.prompt == case.request.prompt for e in (*case.also, *case.never))
        assert case.near_miss[0].prompt == case.request.prompt  # the negatives ask the near-miss question
        subject = world.by_name(json.loads(Path(case.request.image).parent.parent.joinpath(
            f"{split}.json").read_text())[case.record_index]["subject"])
        lookalike = world.subject(subject.lookalike)
        seed = world.config.seed
        for k in range(3):
            assert image_digest(case.also[k].image) == image_digest(
                fixed_render(subject, "heldout", example_render("also", k), seed))
            assert image_digest(case.never[k].image) == image_digest(
                fixed_render(lookalike, "heldout", example_render("never", k), seed))
    one = cases(split, 1, cache_dir)
    assert [image_digest(c.also[0].image) for c in one] == [image_digest(c.also[0].image) for c in with_examples]


def test_re_edits_keep_the_examples_of_their_fact(cache_dir: str) -> None:
    base = cases("dev", 1, cache_dir)
    stream = build_stream(base, 2 * len(base) + 5, seed=0)
    first = {c.fact_id: c for c in base}
    re_edits = [c for c in stream if c.round > 0]
    assert re_edits
    for case in re_edits:
        assert case.also == first[case.fact_id].also and case.never == first[case.fact_id].never
        assert case.target != first[case.fact_id].target


# -- records files --------------------------------------------------------------------------


def _mmedit_file(root: Path, extra: dict[str, Any] | None = None) -> Path:
    for name, colour in (("e.png", (1, 2, 3)), ("p.png", (4, 5, 6)), ("n.png", (7, 8, 9))):
        Image.new("RGB", (4, 4), colour).save(root / name)
    record = {"src": "what is it?", "alt": "a cat", "image": "e.png", **(extra or {})}
    path = root / "mmedit.json"
    path.write_text(json.dumps([record]))
    return path


def test_mmedit_records_without_examples_are_a_clear_error(tmp_path: Path) -> None:
    path = _mmedit_file(tmp_path)
    assert load_records("mmedit-vqa", path)[0].request.also == ()
    with pytest.raises(DataError, match=r"record 0, field 'scope_also'.*needs at least 1 also example"):
        load_records("mmedit-vqa", path, scope_examples=1)
    with pytest.raises(ValueError, match="--scope-examples"):
        load_records("mmedit-vqa", path, scope_examples=-1)


def test_records_may_carry_their_own_examples(tmp_path: Path) -> None:
    path = _mmedit_file(tmp_path, {"scope_also": ["p.png", {"image": "p.png", "prompt": "and this?"}],
                                   "scope_never": [{"image": "n.png"}, "n.png"]})
    plain = load_records("mmedit-vqa", path)[0]
    assert plain.request.also == () and plain.request.never == ()  # ignored without the option
    case = load_records("mmedit-vqa", path, scope_examples=2)[0]
    assert [e.prompt for e in case.also] == [case.request.prompt, "Question: and this? Short answer:"]
    assert [Path(e.image).name for e in case.never] == ["n.png", "n.png"]
    assert len(load_records("mmedit-vqa", path, scope_examples=1)[0].never) == 1
    with pytest.raises(DataError, match="scope_also.*at least 3 also examples per record, this record has 2"):
        load_records("mmedit-vqa", path, scope_examples=3)
    bad = _mmedit_file(tmp_path, {"scope_also": ["missing.png"], "scope_never": ["n.png"]})
    with pytest.raises(DataError, match=r"field 'scope_also\[0\]': image not found"):
        load_records("mmedit-vqa", bad, scope_examples=1)
    bad = _mmedit_file(tmp_path, {"scope_also": [3], "scope_never": ["n.png"]})
    with pytest.raises(DataError, match=r"scope_also\[0\]"):
        load_records("mmedit-vqa", bad, scope_examples=1)


# -- the bench: the editor check, the protocol, results, merges, the summary ------------------


def test_editors_that_cannot_use_examples_are_refused_before_any_work(tmp_path: Path) -> None:
    refusing = [name for name, entry in EDITORS.items() if not entry.editor.uses_examples]
    assert refusing and "scopememory" not in refusing
    for name in refusing:
        with pytest.raises(ValueError, match=rf"--scope-examples 1: editor\(s\) \['{name}'\] cannot use"):
            BenchSpec(model="x", data="world:dev", out=tmp_path, editors=("scopememory", name), scope_examples=1)
        BenchSpec(model="x", data="world:dev", out=tmp_path, editors=(name,))  # fine without examples
    BenchSpec(model="x", data="world:dev", out=tmp_path, editors=("scopememory",), scope_examples=3)
    with pytest.raises(ValueError, match="--scope-examples must be an integer >= 0"):
        BenchSpec(model="x", data="world:dev", out=tmp_path, editors=("scopememory",), scope_examples=-1)
    out = tmp_path / "never-made"
    result = CliRunner().invoke(app, ["bench", "--data", "world:dev", "--out", str(out), "--editors", "lora",
                                      "--scope-examples", "1"])
    assert result.exit_code == 2 and "cannot use scope examples" in result.output
    assert not out.exists()


def test_the_protocol_passes_the_examples_with_every_edit() -> None:
    from test_eval_protocol import FakeVLM, MemoryEditor, _cases

    from editscope.evaluation.protocol import ProtocolConfig, run_comparison

    seen: list[EditRequest] = []

    class Recorder(MemoryEditor):
        uses_examples = True

        def edit(self, request: EditRequest) -> EditResult:
            seen.append(request)
            return super().edit(request)

    base = [c if i % 2 else _with_examples(c) for i, c in enumerate(_cases(3))]
    stream = build_stream(base, 5, seed=0)
    run_comparison(FakeVLM(), stream, {"r": lambda v: Recorder(v, "exact")},
                   ProtocolConfig(checkpoints=(5,), progress=False))
    assert [(r.also, r.never) for r in seen] == [(c.also, c.never) for c in stream]
    assert any(r.also for r in seen) and all(r.anchors for r in seen)


def _with_examples(case: EditCase) -> EditCase:
    from dataclasses import replace

    image = str(case.request.image)
    return replace(case, request=replace(case.request, also=[image + "-also"], never=[(image + "-never", "q?")]))


def test_stream_rows_name_the_examples_only_when_there_are_some(cache_dir: str) -> None:
    plain, with_examples = _stream_rows(cases("dev", 0, cache_dir)[:2]), _stream_rows(cases("dev", 1, cache_dir)[:2])
    assert all("also" not in r and "never" not in r for r in plain)
    assert [r["also"] for r in with_examples] == [["dev-0000-also0.png"], ["dev-0001-also0.png"]]
    assert [{k: v for k, v in r.items() if k not in ("also", "never", "image")} for r in with_examples] == \
        [{k: v for k, v in r.items() if k != "image"} for r in plain]


def _results(name: str, scope_examples: int | None) -> dict[str, Any]:
    from test_eval_report import _run

    config: dict[str, Any] = {"model": "tiny", "data": "x", "edits": 3, "seed": 0, "preset": None,
                              "checkpoints": [1, 3], "scope_threshold": 0.5, "editor_configs": {name: {}}}
    if scope_examples is not None:
        config["scope_examples"] = scope_examples
    return build_results([_run(name)], (1, 3), config, [{"case_id": 0}], f"bench {name}", "t")


def test_merges_check_the_number_of_examples(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'scope_examples': 1 != 0 \(runs with different --scope-examples"):
        merge_results([_results("a", 0), _results("b", 1)], "merge", "t")
    with pytest.raises(ValueError, match=r"'scope_examples': 3 != 1"):
        merge_results([_results("a", 1), _results("b", 3)], "merge", "t")
    assert list(merge_results([_results("a", 1), _results("b", 1)], "m", "t")["editors"]) == ["a", "b"]
    # a results file written before the option existed ran without examples
    assert merge_results([_results("a", None), _results("b", 0)], "m", "t")["config"]["scope_examples"] == 0
    with pytest.raises(ValueError, match="scope_examples"):
        merge_results([_results("a", None), _results("b", 1)], "merge", "t")
    from editscope.evaluation.report import write_results

    paths = [str(write_results(_results(n, k), tmp_path / n)) for n, k in (("a", 0), ("b", 1))]
    result = CliRunner().invoke(app, ["bench-merge", *paths, "--out", str(tmp_path / "merged")])
    assert result.exit_code == 2 and "scope_examples" in result.output


def test_the_summary_shows_the_number_of_examples_when_there_are_some() -> None:
    md = summary_markdown(_results("scopememory", 1))
    assert "scope examples: 1 also and 1 never per edit" in md
    rows = [line for line in md.splitlines() if line.startswith("| scopememory")]
    assert len(rows) >= 3 and all(line.startswith("| scopememory +examples 1 |") for line in rows)
    for plain in (_results("scopememory", 0), _results("scopememory", None)):
        md = summary_markdown(plain)
        assert "+examples" not in md and "scope examples" not in md and "| scopememory | " in md
