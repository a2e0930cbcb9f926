"""Benchmark loaders: formats, prompt wrapping, image resolution, malformed records, streams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from editscope.evaluation.data import VQA_TEMPLATE, DataError, load_records, parse_data_spec
from editscope.evaluation.stream import build_stream, latest_per_fact


def _image(path: Path, color=(200, 10, 10)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path.name if path.parent.name == "img" else str(path)


def _record(i: int, **over) -> dict:
    rec = {
        "src": f"What is object {i}?", "pred": "old", "alt": f"value{i}",
        "rephrase": f"Which thing is object {i}?", "image": f"a{i}.png",
        "image_rephrase": f"b{i}.png", "loc": f"nq question: who wrote book {i}",
        "loc_ans": f"author{i}", "m_loc": f"c{i}.png", "m_loc_q": f"What color is it {i}?",
        "m_loc_a": "red",
    }
    rec.update(over)
    return rec


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    img = tmp_path / "img"
    for i in range(4):
        for p in "abc":
            _image(img / f"{p}{i}.png")
    return tmp_path


def _write(root: Path, records, name="vqa_eval.json") -> Path:
    path = root / name
    path.write_text(json.dumps(records))
    return path


def test_mmedit_vqa_wraps_questions_and_resolves_images(root: Path) -> None:
    path = _write(root, [_record(0), _record(1)])
    cases = load_records("mmedit-vqa", path, root / "img")
    assert len(cases) == 2
    c = cases[1]
    assert c.request.prompt == "Question: What is object 1? Short answer:"
    assert c.request.target == "value1"
    assert c.request.image == root / "img" / "a1.png"
    assert c.rephrase.prompt == VQA_TEMPLATE.format("Which thing is object 1?")
    assert c.rephrase.answer == "value1" and c.rephrase.image == c.request.image
    assert c.image_rephrase.image == root / "img" / "b1.png"
    assert c.image_rephrase.prompt == c.request.prompt
    assert c.loc.prompt == "nq question: who wrote book 1" and c.loc.image is None
    assert c.loc.answer == "author1"
    assert c.m_loc.prompt == "Question: What color is it 1? Short answer:"
    assert c.m_loc.image == root / "img" / "c1.png" and c.m_loc.answer == "red"
    assert c.fact_id != cases[0].fact_id and c.case_id == 1 and c.round == 0


def test_mmedit_caption_uses_raw_src(root: Path) -> None:
    path = _write(root, [_record(0, src="a photo of", rephrase="an image of")], "caption_eval_edit.json")
    spec = parse_data_spec(f"mmedit:{path}")
    assert spec.fmt == "mmedit-ic"
    (c,) = load_records(spec.fmt, path, root / "img")
    assert c.request.prompt == "a photo of" and c.rephrase.prompt == "an image of"
    assert c.m_loc.prompt.startswith("Question: ")


def test_vlkeb_portability(root: Path) -> None:
    rec = _record(0, port_new=[
        {"port_type": "1-hop", "Q&A": {"Question": "Where is it made?", "Answer": "Oslo"}},
        {"port_type": "2-hop", "Q&A": {"Question": "Which country?", "Answer": ["Norway", "NO"]}},
    ])
    (c,) = load_records("vlkeb", _write(root, [rec]), root / "img")
    assert [p.answer for p in c.portability] == ["Oslo", "Norway"]
    assert c.portability[0].prompt == "Question: Where is it made? Short answer:"
    assert c.portability[0].image == c.request.image


def test_world_extra_probes(root: Path) -> None:
    rec = _record(0, text_only_q="What is the home of Zorb?", near_miss_image="c1.png", near_miss_a="Paris",
                  other_fact_q="What language does it speak?", other_fact_a="Elvish", fact="city")
    (c,) = load_records("world", _write(root, [rec]), root / "img")
    assert c.request.prompt == "What is object 0?"  # the world model reads bare questions
    assert c.text_transfer[0].image is None and c.text_transfer[0].answer == "value0"
    assert c.near_miss[0].image == root / "img" / "c1.png"
    assert c.near_miss[0].prompt == c.request.prompt and c.near_miss[0].answer == "Paris"
    assert c.other_fact[0].answer == "Elvish" and c.other_fact[0].image == c.request.image
    assert set(c.out_of_scope_probes()) == {"loc", "m_loc", "near_miss", "other_fact"}
    assert c.group == "city"
    rec2 = _record(1, near_miss_image="c0.png", near_miss_q="Which one is it?", near_miss_a="Rome",
                   record_id="test-0001")
    (c2,) = load_records("world", _write(root, [rec2], "w2.json"), root / "img")
    assert c2.near_miss[0].prompt == "Which one is it?" and c2.fact_id == "w2:test-0001"
    assert c.siblings == () and c2.siblings == ()
    rec3 = _record(3, sibling_q=["Who made it?", "When was it made?"], sibling_a=["Acme", "1901"])
    (c3,) = load_records("world", _write(root, [rec3], "w4.json"), root / "img")
    assert [(p.prompt, p.answer, p.image) for p in c3.siblings] == [
        ("Who made it?", "Acme", c3.request.image), ("When was it made?", "1901", c3.request.image)]
    assert "siblings" not in c3.out_of_scope_probes()  # anchors only, never scored
    for change, message in (({"sibling_a": ["Acme"]}, "has 1 answers for 2 questions"),
                            ({"sibling_a": ["Acme", ""]}, "item 1 is not a non-empty string"),
                            ({"sibling_q": 5}, "expected a list of strings")):
        path = _write(root, [rec3, {**rec3, **change}], "w5.json")
        with pytest.raises(DataError, match=rf"record 1, field 'sibling_[qa]': {message}"):
            load_records("world", path, root / "img")
    bad = _record(2, near_miss_image="gone.png", near_miss_a="Rome")
    path = _write(root, [rec, bad], "w3.json")
    with pytest.raises(DataError, match=r"record 1, field 'near_miss_image': image not found"):
        load_records("world", path, root / "img")


@pytest.mark.parametrize(
    "change, field_name",
    [
        ({"alt": ""}, "alt"),
        ({"alt": "   "}, "alt"),
        ({"alt": None}, "alt"),
        ({"src": 3}, "src"),
        ({"image": "missing.png"}, "image"),
        ({"image_rephrase": "nope.png"}, "image_rephrase"),
        ({"m_loc_a": ""}, "m_loc_a"),
        ({"loc_ans": None}, "loc_ans"),
    ],
)
def test_malformed_record_names_index_field_and_path(root: Path, change: dict, field_name: str) -> None:
    path = _write(root, [_record(0), _record(1), _record(2, **change)])
    with pytest.raises(DataError) as err:
        load_records("mmedit-vqa", path, root / "img")
    msg = str(err.value)
    assert "record 2" in msg and repr(field_name) in msg and str(path) in msg


def test_unreadable_image_is_an_error(root: Path) -> None:
    (root / "img" / "a0.png").write_bytes(b"not a png at all")
    path = _write(root, [_record(0)])
    with pytest.raises(DataError, match=r"record 0, field 'image': unreadable image"):
        load_records("mmedit-vqa", path, root / "img")


def test_bad_portability_entry(root: Path) -> None:
    rec = _record(0, port_new=[{"port_type": "1-hop", "Q&A": {"Question": "Q?"}}])
    path = _write(root, [rec])
    with pytest.raises(DataError, match=r"record 0, field 'port_new\[0\].Q&A.Answer'"):
        load_records("vlkeb", path, root / "img")


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"), ('{"a": 1}', "expected a JSON list"), ("[]", "no records"),
    ('[1]', "record 0 is a int"),
])
def test_malformed_files(root: Path, content: str, message: str) -> None:
    path = root / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_records("mmedit-vqa", path, root / "img")


def test_missing_file_and_unknown_format(root: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_records("mmedit-vqa", root / "none.json")
    with pytest.raises(DataError, match="unknown benchmark format"):
        load_records("mmedit-xx", _write(root, [_record(0)]))


def test_data_specs() -> None:
    assert parse_data_spec("world:test").split == "test"
    assert parse_data_spec("world:/d/e.json").split is None
    assert parse_data_spec("vlkeb:/x/y.json").location == "/x/y.json"
    assert parse_data_spec("mmedit:/x/vqa_eval.json").fmt == "mmedit-vqa"
    for bad in ("world:train", "world:x.txt", "foo:bar", "mmedit", "mmedit:"):
        with pytest.raises(DataError):
            parse_data_spec(bad)


def test_stream_re_edits_facts_to_new_values(root: Path) -> None:
    recs = [_record(i, port_new=[{"port_type": "1-hop", "Q&A": {"Question": "Q?", "Answer": "A"}}])
            for i in range(3)]
    cases = load_records("vlkeb", _write(root, recs), root / "img")
    stream = build_stream(cases, 8, seed=1)
    assert [c.case_id for c in stream] == list(range(8))
    assert [c.round for c in stream] == [0, 0, 0, 1, 1, 1, 2, 2]
    seen: dict[str, str] = {}
    for c in stream:
        if c.round:
            assert c.previous_target == seen[c.fact_id]
            assert c.target != seen[c.fact_id]
            assert c.rephrase.answer == c.target and c.image_rephrase.answer == c.target
            assert c.portability == ()
            assert c.loc == cases[c.record_index].loc  # out-of-scope probes are kept
        seen[c.fact_id] = c.target
    latest = latest_per_fact(stream)
    assert len(latest) == 3
    assert {c.fact_id: c.target for c in latest} == seen
    assert [c.case_id for c in latest] == sorted(c.case_id for c in latest)
    assert build_stream(cases, 8, seed=1) == stream  # seeded


def test_short_stream_is_a_prefix(root: Path) -> None:
    cases = load_records("mmedit-vqa", _write(root, [_record(i) for i in range(4)]), root / "img")
    assert [c.fact_id for c in build_stream(cases, 2)] == [cases[0].fact_id, cases[1].fact_id]
    with pytest.raises(ValueError):
        build_stream(cases, 0)
