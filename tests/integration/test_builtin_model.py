"""The shipped built-in model: loads with plain transformers and knows its world."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from editscope.world import FACTS, builtin_path, fixed_render, load_world, user_prompt, write_edits
from editscope.world.templates import attribute_question, fact_question, fact_templates

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def loaded():
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    directory = builtin_path()
    model = LlavaForConditionalGeneration.from_pretrained(directory, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(directory)
    return model, processor, load_world(directory)


def _generate(model, processor, prompts: list[str], images: list[Image.Image] | None) -> list[str]:
    processor.tokenizer.padding_side = "left"
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    new = out[:, inputs["input_ids"].shape[1]:]
    return [processor.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]


def test_checkpoint_files_and_size():
    directory = builtin_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "processor_config.json", "world.json"):
        assert (directory / name).is_file(), name
    total = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
    assert total <= 30 * 1024 * 1024
    meta = json.loads((directory / "world.json").read_text())
    assert meta["command"].startswith("editscope world train")


def test_processor_matches_the_prompt_conventions(loaded):
    model, processor, world = loaded
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape is this?"}]}]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == user_prompt(
        "What shape is this?", True)
    text_only = [{"role": "user", "content": [{"type": "text", "text": "Who made Foo?"}]}]
    assert processor.apply_chat_template(text_only, add_generation_prompt=True) == "USER: Who made Foo? ASSISTANT:"
    image = fixed_render(world.subject(0), "seen", 0, world.config.seed)
    inputs = processor(images=image, text=user_prompt("What shape is this?", True), return_tensors="pt")
    ids = inputs["input_ids"][0]
    assert ids[0].item() == processor.tokenizer.bos_token_id
    assert int((ids == model.config.image_token_index).sum()) == model.config.image_seq_length


def test_answers_known_facts_with_images_and_by_name(loaded):
    model, processor, world = loaded
    subjects = world.subjects[::20]
    prompts, images, answers = [], [], []
    for k, s in enumerate(subjects):
        fact = FACTS[k % len(FACTS)]
        q = fact_question(s, fact, fact_templates(fact, "train")[0], image=True)
        prompts.append(user_prompt(q.text, True))
        images.append(fixed_render(s, "heldout", 0, world.config.seed))
        answers.append(q.answer)
    visual = _generate(model, processor, prompts, images)
    text_prompts = [user_prompt(fact_question(s, FACTS[k % 4], fact_templates(FACTS[k % 4], "train")[1],
                                              image=False).text, False) for k, s in enumerate(subjects)]
    text = _generate(model, processor, text_prompts, None)
    assert sum(v == a for v, a in zip(visual, answers)) >= len(subjects) - 1, list(zip(visual, answers))
    assert sum(t == a for t, a in zip(text, answers)) >= len(subjects) - 1, list(zip(text, answers))


def test_answers_visual_attribute_questions(loaded):
    model, processor, world = loaded
    subjects = world.subjects[1::30]
    questions = [attribute_question(s, "shape", "What shape is this?") for s in subjects]
    images = [fixed_render(s, "heldout", 2, world.config.seed) for s in subjects]
    got = _generate(model, processor, [user_prompt(q.text, True) for q in questions], images)
    assert sum(g == q.answer for g, q in zip(got, questions)) >= len(subjects) - 1


def test_make_edits_records_hold_the_models_answers(loaded, tmp_path):
    model, processor, world = loaded
    path = write_edits(world, "test", tmp_path, n=8)
    records = json.loads(path.read_text())
    images = [Image.open(tmp_path / r["image"]).convert("RGB") for r in records]
    got = _generate(model, processor, [user_prompt(r["src"], True) for r in records], images)
    assert sum(g == r["pred"] for g, r in zip(got, records)) >= 7
    assert all(g != r["alt"] for g, r in zip(got, records))
    loc = _generate(model, processor, [user_prompt(r["loc"], False) for r in records], None)
    assert sum(g == r["loc_ans"] for g, r in zip(loc, records)) >= 7
