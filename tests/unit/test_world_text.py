"""The world tokenizer, the encoder of training examples and the edit records (no model files)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from editscope.world import FACTS, build_world, make_records, split_subjects, write_edits
from editscope.world.data import IGNORE_INDEX, Encoder, collate, exact_matches
from editscope.world.templates import fact_question, fact_templates
from editscope.world.tokenizer import build_tokenizer

MMEDIT_KEYS = ("src", "pred", "alt", "rephrase", "image", "image_rephrase", "loc", "loc_ans", "m_loc",
               "m_loc_q", "m_loc_a")
EXTRA_KEYS = ("text_only_q", "text_only_a", "near_miss_image", "near_miss_q", "near_miss_a", "other_fact_q",
              "other_fact_a", "record_id", "subject", "subject_index", "fact", "lookalike")


@pytest.fixture(scope="module")
def world():
    return build_world()


@pytest.fixture(scope="module")
def tokenizer(world):
    return build_tokenizer(world)


@pytest.mark.parametrize("text", ["Zqxwv Jjkkp", "Ünïcødé 漢字 🙂", "  two  spaces\tand\nlines ", "1492", "a"])
def test_tokenizer_round_trips_unseen_strings(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert ids
    assert tokenizer.decode(ids) == text


def test_tokenizer_special_tokens_and_bos(tokenizer):
    assert len(tokenizer) <= 2000
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "</s>", "<pad>", "<image>")] == [0, 1, 2, 3]
    ids = tokenizer("USER: <image>\nWhat shape is this? ASSISTANT:").input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(3) == 1
    assert tokenizer("</s>", add_special_tokens=False).input_ids == [tokenizer.eos_token_id]


def test_tokenizer_is_deterministic(world, tokenizer):
    again = build_tokenizer(world)
    text = " ".join(s.name for s in world.subjects[:20])
    assert again(text).input_ids == tokenizer(text).input_ids


def test_prompt_and_answer_tokenise_independently(world, tokenizer):
    """Tokenising prompt + answer together equals the concatenation of the parts, so an editor
    that encodes them separately sees the same tokens as training did."""
    encoder = Encoder(tokenizer, image_tokens=4)
    for s in world.subjects[:30]:
        for fact in FACTS:
            q = fact_question(s, fact, fact_templates(fact, "train")[0], image=False)
            joint = tokenizer(f"USER: {q.text} ASSISTANT: {q.answer}</s>").input_ids
            assert joint == encoder.prompt_ids(q.text, False) + encoder.answer_ids(q.answer)


def test_encoder_expands_image_and_labels_only_the_answer(world, tokenizer):
    encoder = Encoder(tokenizer, image_tokens=16)
    s = world.subject(0)
    q = fact_question(s, "maker", "Who made {s}?", image=True)
    image = Image.new("RGB", (64, 64))
    encoded = encoder.encode(q, image)
    assert encoded.input_ids.count(3) == 16
    answer = encoder.answer_ids(s.facts["maker"])
    assert encoded.labels[-len(answer):] == answer
    assert all(label == IGNORE_INDEX for label in encoded.labels[:-len(answer)])
    with pytest.raises(ValueError):
        encoder.encode(q, None)
    batch = collate([encoded, encoder.encode(fact_question(s, "maker", "Who made {s}?", False), None)],
                    tokenizer.pad_token_id)
    assert batch["pixel_values"].shape == (1, 3, 64, 64)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape


def test_exact_matches_requires_every_answer_token():
    import torch

    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 1], [IGNORE_INDEX, IGNORE_INDEX, 5, 1]])
    logits = torch.zeros(2, 4, 8)
    logits[:, 1, 5] = 1.0
    logits[0, 2, 1] = 1.0
    logits[1, 2, 6] = 1.0
    assert exact_matches(logits, labels).tolist() == [True, False]


def test_edit_records_are_valid_and_deterministic(world):
    records = make_records(world, "test", n=40)
    assert records == make_records(world, "test", n=40)
    assert len(records) == 40
    for r in records:
        for key in MMEDIT_KEYS + EXTRA_KEYS:
            assert key in r, key
        subject = world.subject(r["subject_index"])
        lookalike = world.subject(subject.lookalike)
        assert r["alt"].strip() and r["alt"] != r["pred"] == subject.facts[r["fact"]]
        assert r["text_only_a"] == r["alt"] and subject.name in r["text_only_q"]
        assert r["rephrase"] != r["src"] and "this" in r["rephrase"]
        assert r["near_miss_a"] == lookalike.facts[r["fact"]] != r["alt"]
        assert r["other_fact_a"] != "" and r["other_fact_q"] != r["src"]
        assert world.by_name(r["loc_subject"]).facts  # a real subject
        assert r["loc_ans"] in world.by_name(r["loc_subject"]).facts.values()
        assert r["m_loc_a"] in world.by_name(r["m_loc_subject"]).facts.values()
        assert len({r["image"], r["image_rephrase"], r["m_loc"], r["near_miss_image"]}) == 4
        # the unscored sibling questions: the subject's facts other than the edited and the probed one
        assert len(r["sibling_q"]) == len(r["sibling_a"]) == len(FACTS) - 2
        assert sorted([r["pred"], r["other_fact_a"], *r["sibling_a"]]) == sorted(subject.facts.values())
        assert not {r["src"], r["other_fact_q"]} & set(r["sibling_q"])


def test_each_subject_edited_once_and_lookalikes_on_different_facts(world):
    records = make_records(world, "test")
    by_subject = {r["subject_index"]: r for r in records}
    assert len(by_subject) == len(records) == len(split_subjects(world)["test"])
    for r in records:
        partner = by_subject.get(world.subject(r["subject_index"]).lookalike)
        assert partner is not None and partner["fact"] != r["fact"]


def test_dev_and_test_are_subject_disjoint_and_locality_never_edited(world):
    dev, test = make_records(world, "dev"), make_records(world, "test")
    dev_subjects = {r["subject"] for r in dev}
    test_subjects = {r["subject"] for r in test}
    assert dev_subjects and test_subjects and not dev_subjects & test_subjects
    edited = dev_subjects | test_subjects
    for r in dev + test:
        assert r["loc_subject"] not in edited and r["m_loc_subject"] not in edited
    with pytest.raises(ValueError):
        make_records(world, "train")
    with pytest.raises(ValueError):
        make_records(world, "dev", n=10_000)


def test_write_edits_writes_json_and_images(world, tmp_path):
    path = write_edits(world, "dev", tmp_path, n=3)
    records = json.loads(path.read_text())
    assert len(records) == 3
    for r in records:
        for key in ("image", "image_rephrase", "m_loc", "near_miss_image"):
            with Image.open(tmp_path / r[key]) as im:
                assert im.size == (64, 64)
