"""Reference sets for the reference prior: the world's training-distribution sample and
reference files (with their errors)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from editscope.editors.reference import ReferenceSetError, has_world, load_reference
from editscope.world import WorldConfig, build_world
from editscope.world.evaluate import SEEN_RENDERS
from editscope.world.reference import reference_probes
from editscope.world.render import fixed_render
from editscope.world.templates import all_questions


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig())


def test_world_reference_is_deterministic_and_from_training_only(world) -> None:
    probes = reference_probes(world, 60, seed=1)
    assert len(probes) == 60
    key = [(p.prompt, p.answer, p.image is None) for p in probes]
    assert key == [(p.prompt, p.answer, p.image is None) for p in reference_probes(world, 60, seed=1)]
    assert key != [(p.prompt, p.answer, p.image is None) for p in reference_probes(world, 60, seed=2)]
    train = {(q.text, q.answer, q.image) for s in world.subjects for q in all_questions(s, "train")}
    heldout = {(q.text, q.image) for s in world.subjects for q in all_questions(s, "heldout")}
    seen = {np.asarray(fixed_render(s, "seen", k, world.config.seed)).tobytes()
            for s in world.subjects for k in range(SEEN_RENDERS)}
    with_image = 0
    for probe in probes:
        assert (probe.prompt, probe.answer, probe.image is not None) in train, probe.prompt
        assert (probe.prompt, probe.image is not None) not in heldout - {(t, i) for t, _, i in train}
        if probe.image is not None:
            with_image += 1
            assert isinstance(probe.image, Image.Image)
            assert np.asarray(probe.image).tobytes() in seen  # a training render, never a held-out one
    assert 0 < with_image < len(probes)  # visual and text-only questions both present
    with pytest.raises(ValueError, match="positive integer"):
        reference_probes(world, 0)


def test_builtin_model_has_a_world_and_a_plain_directory_has_none(tmp_path) -> None:
    assert has_world("builtin")
    assert not has_world(tmp_path)
    with pytest.raises(ReferenceSetError, match="not trained on a world"):
        load_reference(None, tmp_path, 8)


def write(tmp_path, records) -> str:
    path = tmp_path / "reference.json"
    path.write_text(json.dumps(records))
    return str(path)


def test_reference_file_resolves_images_and_caps_the_size(tmp_path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    path = write(tmp_path, [{"prompt": "what is it ?", "answer": "a box", "image": "a.png"},
                            {"prompt": "where is Paris ?", "answer": "France"},
                            {"prompt": "third", "answer": "x"}])
    probes = load_reference(path, "unused", 2)
    assert [(p.prompt, p.answer) for p in probes] == [("what is it ?", "a box"), ("where is Paris ?", "France")]
    assert probes[0].image == tmp_path / "a.png" and probes[1].image is None


@pytest.mark.parametrize(
    "records, message",
    [
        ({"prompt": "x"}, "non-empty list"),
        ([], "non-empty list"),
        (["text"], "record 0 is a str"),
        ([{"prompt": "q", "answer": "a"}, {"prompt": "q", "answer": " "}], "record 1, field 'answer'"),
        ([{"answer": "a"}], "record 0, field 'prompt'"),
        ([{"prompt": "q", "answer": "a", "image": "missing.png"}], "record 0, field 'image': image not found"),
    ],
)
def test_bad_reference_files_name_record_and_field(tmp_path, records, message) -> None:
    with pytest.raises(ReferenceSetError, match=message):
        load_reference(write(tmp_path, records), "unused", 10)


def test_missing_or_corrupt_reference_file(tmp_path) -> None:
    with pytest.raises(ReferenceSetError, match="not found"):
        load_reference(str(tmp_path / "nope.json"), "unused", 4)
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(ReferenceSetError, match="not readable JSON"):
        load_reference(str(tmp_path / "bad.json"), "unused", 4)
    with pytest.raises(ReferenceSetError, match="positive integer"):
        load_reference("world", "builtin", 0)
