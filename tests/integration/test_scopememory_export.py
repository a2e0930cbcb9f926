"""The routed export of ScopeMemory: a checkpoint that plain transformers loads with
``trust_remote_code=True`` and no editscope import, routing as the editor does, with the
editor's logits (teacher-forced, on the edits, their other renders and locality probes) and
its greedy answers.

The checkpoint is loaded and run in a subprocess whose import system refuses ``editscope``;
the parent passes it encoded inputs and compares what comes back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_models import TEST_DEVICE, build_tiny
from tiny_models import noise_image as image

from editscope.editors.registry import build_editor
from editscope.editors.scopememory import ScopeMemory, load_memory_preset
from editscope.editors.scopememory.router import NO_SLOT, Examples, SlotKeys, Thresholds, match
from editscope.models import VisionLanguageModel
from editscope.types import EditRequest

PROMPT = "what color is the object in the image ?"
ATOL = 1e-4

# Runs in a clean interpreter (python -I): loads the export with transformers only.
LOADER = r'''
import importlib.abc, json, sys

class NoEditscope(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "editscope" or name.startswith("editscope."):
            raise ImportError(f"{name} is blocked in this process")
        return None

sys.meta_path.insert(0, NoEditscope())
job_dir = sys.argv[1]
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText, AutoProcessor

torch.set_num_threads(1)
job = json.load(open(f"{job_dir}/job.json"))
inputs = load_file(f"{job_dir}/inputs.safetensors")


def probe(name):
    prefix = name + "::"
    return {k[len(prefix):]: v for k, v in inputs.items() if k.startswith(prefix)}


def route(model):
    call = model.scopememory.call
    if call is None or call["route"] is None:
        return torch.tensor([NO, 0, 0])
    slot, local, shared = call["route"]
    return torch.tensor([int(slot[0]), int(local[0]), int(shared[0])])


NO = -1
model = AutoModelForImageTextToText.from_pretrained(job["model"], trust_remote_code=True).eval()
out = {}
with torch.no_grad():
    for name in job["probes"]:
        out[name + ".logits"] = model(**probe(name)).logits[0].float()
        out[name + ".route"] = route(model)
    for name in job["generate"]:
        out[name + ".generated"] = model.generate(**probe(name), max_new_tokens=job["max_new_tokens"],
                                                  do_sample=False, num_beams=1, pad_token_id=job["pad"])[0]
    if job.get("resave"):
        model.save_pretrained(f"{job_dir}/resaved")
        again = AutoModelForImageTextToText.from_pretrained(f"{job_dir}/resaved", trust_remote_code=True).eval()
        for name in job["probes"]:
            out[name + ".resaved"] = again(**probe(name)).logits[0].float()
result = {"class": type(model).__name__, "bases": [c.__name__ for c in type(model).__mro__[1:3]],
          "slots": model.scopememory.n, "editscope_loaded": any(m.split(".")[0] == "editscope" for m in sys.modules)}
try:
    import editscope  # noqa: F401
    result["editscope_importable"] = True
except ImportError:
    result["editscope_importable"] = False
check = job.get("processor")
if check:
    processor = AutoProcessor.from_pretrained(job["model"])
    pixels = [Image.open(check["image"]).convert("RGB")] if check["image"] else None
    encoded = processor(images=pixels, text=check["text"], return_tensors="pt")
    out["processor.input_ids"] = encoded["input_ids"]
    if pixels:
        out["processor.pixel_values"] = encoded["pixel_values"].float()
save_file({k: v.contiguous() for k, v in out.items()}, f"{job_dir}/outputs.safetensors")
json.dump(result, open(f"{job_dir}/result.json", "w"))
'''


def run_loader(model_dir: Path, job_dir: Path, probes: dict, generate: dict, pad: int, max_new_tokens: int = 8,
               processor: dict | None = None, resave: bool = False) -> tuple[dict, dict]:
    """Run ``LOADER`` on ``model_dir`` with the encoded ``probes`` (name -> ModelInputs, for
    logits) and ``generate`` (name -> prompt-only ModelInputs); returns its tensors and result."""
    job_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"{name}::{k}": v.detach().cpu().contiguous()
               for name, x in {**probes, **generate}.items() for k, v in x.tensors.items()}
    save_file(tensors, str(job_dir / "inputs.safetensors"))
    (job_dir / "job.json").write_text(json.dumps({
        "model": str(model_dir), "probes": list(probes), "generate": list(generate), "pad": pad,
        "max_new_tokens": max_new_tokens, "processor": processor, "resave": resave}))
    script = job_dir / "loader.py"
    script.write_text(LOADER)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(job_dir), "HF_HUB_OFFLINE": "1",
           "HF_MODULES_CACHE": str(job_dir / "modules"), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-I", str(script), str(job_dir)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return load_file(str(job_dir / "outputs.safetensors")), json.loads((job_dir / "result.json").read_text())


def route_of(editor: ScopeMemory, inputs) -> list[int]:
    with torch.no_grad():
        editor.vlm.forward(inputs)
    route = editor.memory.call.route if editor.memory.call is not None else None
    if route is None:
        return [NO_SLOT, 0, 0]
    return [int(route.slot[0]), int(route.local[0]), int(route.shared[0])]


def pad_id(vlm: VisionLanguageModel) -> int:
    pad = vlm.tokenizer.pad_token_id
    return int(pad if pad is not None else min(vlm._eos_ids(), default=0))


def compare(editor: ScopeMemory, probes: dict, outputs: dict) -> dict[str, float]:
    """Max abs logit difference per probe; routes must be equal."""
    diffs = {}
    for name, x in probes.items():
        with torch.no_grad():
            expected = editor.vlm.forward(x)[0].float().cpu()
        assert outputs[name + ".route"].tolist() == route_of(editor, x), name
        diffs[name] = float((outputs[name + ".logits"] - expected).abs().max())
    return diffs


# -- the router, re-implemented ----------------------------------------------------------------

def test_template_match_equals_router_match() -> None:
    from editscope.editors.scopememory import modeling_template as template

    g = torch.Generator().manual_seed(0)
    n, b, d = 50, 64, 16
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=g), dim=-1)  # noqa: E731
    text, img = unit(n, d), unit(n, d)
    has_image = torch.rand(n, generator=g) < 0.7
    slots = SlotKeys(text=text, image=img * has_image[:, None], has_image=has_image,
                     shared=torch.rand(n, generator=g) < 0.5, active=torch.rand(n, generator=g) < 0.8,
                     tau_text=0.2 + 0.3 * torch.rand(n, generator=g), tau_image=0.2 + 0.3 * torch.rand(n, generator=g))
    # queries near some slots, so that every rule fires somewhere
    pick = torch.randint(0, n, (b,), generator=g)
    q = torch.nn.functional.normalize(text[pick] + 0.6 * torch.randn(b, d, generator=g), dim=-1)
    q_has = torch.rand(b, generator=g) < 0.6
    v = torch.nn.functional.normalize(img[pick] + 0.3 * torch.randn(b, d, generator=g), dim=-1) * q_has[:, None]
    limits = Thresholds(instance=0.9, text_only=0.5, margin=0.02, cap=0.98)
    # scope examples: also examples near some queries' images, never examples near others'
    also_owner, never_owner = torch.randint(0, n, (80,), generator=g), torch.randint(0, n, (60,), generator=g)
    examples = Examples(also=unit(80, d), also_owner=also_owner, never=unit(60, d), never_owner=never_owner)
    examples.also[:20] = v[:20]
    examples.also_owner[:20] = pick[:20]
    examples.never[20:40] = v[20:40]
    examples.never_owner[20:40] = pick[20:40]
    without = match(q, v, q_has, slots, limits)
    slots.examples = examples
    expected = match(q, v, q_has, slots, limits)
    assert not torch.equal(without.slot, expected.slot)  # the examples move some routes
    keep = slots.active.nonzero().flatten()  # the export keeps active slots only, renumbered
    renumber = torch.full((n,), -1, dtype=torch.long)
    renumber[keep] = torch.arange(keep.numel())
    compact = {k: getattr(slots, k)[keep] for k in ("text", "image", "has_image", "shared", "tau_text", "tau_image")}
    for kind in ("also", "never"):
        owner = renumber[getattr(examples, f"{kind}_owner")]
        compact[kind], compact[f"{kind}_owner"] = getattr(examples, kind)[owner >= 0], owner[owner >= 0]
    slot, local, shared = template.match(q, v, q_has, compact, limits.instance, limits.text_only, limits.margin)
    original = torch.where(slot >= 0, keep[slot.clamp(min=0)], slot)
    assert torch.equal(original, expected.slot)
    assert torch.equal(local, expected.local) and torch.equal(shared, expected.shared)
    # the subject lead: the template's rule equals the router's, and it moves some routes
    led = dataclasses.replace(limits, lead=0.05)
    with_lead = match(q, v, q_has, slots, led)
    assert not torch.equal(with_lead.slot, expected.slot)
    slot, local, shared = template.match(q, v, q_has, compact, led.instance, led.text_only, led.margin, led.lead)
    assert torch.equal(torch.where(slot >= 0, keep[slot.clamp(min=0)], slot), with_lead.slot)
    assert torch.equal(local, with_lead.local) and torch.equal(shared, with_lead.shared)
    # offsets on the also examples (the editor's views): the same in both, and they move some routes
    examples.also_offset = -0.3 * (torch.arange(80) % 2 == 0).float()
    offset = match(q, v, q_has, slots, limits)
    assert not torch.equal(offset.slot, expected.slot)
    owner = renumber[examples.also_owner]
    compact["also_offset"] = examples.also_offset[owner >= 0]
    slot, local, shared = template.match(q, v, q_has, compact, limits.instance, limits.text_only, limits.margin)
    assert torch.equal(torch.where(slot >= 0, keep[slot.clamp(min=0)], slot), offset.slot)
    assert torch.equal(local, offset.local) and torch.equal(shared, offset.shared)
    assert (expected.slot != NO_SLOT).sum() > 10 and expected.local.any() and (expected.shared & ~expected.local).any()
    ids = torch.tensor([[5, 1, 2, 3, 7, 1, 2, 3, 9], [1, 2, 4, 4, 4, 4, 4, 4, 4]])
    from editscope.editors.scopememory.router import prompt_ends

    for marker in ([1, 2, 3], [], [4, 4, 4, 4, 4, 4, 4, 4, 4, 4]):
        m = torch.tensor(marker, dtype=torch.long)
        assert torch.equal(template.prompt_ends(ids, m), prompt_ends(ids, m))


# -- a tiny LLaVA ------------------------------------------------------------------------------

def test_tiny_export_routes_and_matches(tmp_path) -> None:
    model, processor = build_tiny("LlavaForConditionalGeneration", seed=0)
    vlm = VisionLanguageModel(model.to(TEST_DEVICE), processor)
    cases = [(image(1), PROMPT, "green fish"), (None, "who made it ?", "red"), (image(9), PROMPT, "x"),
             (image(7), "who made it ?", "blue"), (image(2), PROMPT, "red")]
    base = [vlm.logits(*c).cpu() for c in cases]
    editor = ScopeMemory(vlm, load_memory_preset("tiny"))
    editor.edit(EditRequest(image=image(1), prompt=PROMPT, target="green fish"))
    editor.edit(EditRequest(prompt="who made it ?", target="red"))
    editor.edit(EditRequest(image=image(2), prompt=PROMPT, target="red"))
    assert editor.forget(editor.fact_of(EditRequest(image=image(2), prompt=PROMPT, target="red")))
    out = editor.save_pretrained(tmp_path / "routed", processor)
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_scopememory.ScopeMemoryRouted"
    source = (out / "modeling_scopememory.py").read_text()
    assert "editscope" not in source.replace("editscope-scopememory", "")
    with safe_open(str(out / "model.safetensors"), framework="pt") as saved:
        assert not any("base_layer" in k for k in saved.keys())  # the plain base model was saved
    probes = {f"p{i}": vlm.encode(*c) for i, c in enumerate(cases)}
    outputs, result = run_loader(out, tmp_path / "job", probes, {"g0": vlm.encode(image(1), PROMPT)},
                                 pad_id(vlm), resave=True)
    assert result["slots"] == 2 and not result["editscope_loaded"] and not result["editscope_importable"]
    assert result["bases"][0] == "LlavaForConditionalGeneration"
    diffs = compare(editor, probes, outputs)
    assert max(diffs.values()) <= ATOL, diffs
    assert outputs["p4.route"].tolist() == [NO_SLOT, 0, 0]  # the forgotten slot is not exported
    assert not torch.equal(outputs["p0.logits"], base[0])  # the edit is in the export
    for i in range(len(cases)):
        assert torch.equal(outputs[f"p{i}.resaved"], outputs[f"p{i}.logits"])  # re-saving keeps the slots
    with torch.no_grad():
        generated = vlm.generate(vlm.encode(image(1), PROMPT), 8)[0].cpu()
    assert torch.equal(outputs["g0.generated"], generated)
    # without remote code the checkpoint is the plain base model
    from transformers import LlavaForConditionalGeneration

    plain = LlavaForConditionalGeneration.from_pretrained(out).eval()
    assert type(plain) is LlavaForConditionalGeneration
    with torch.no_grad():
        logits = plain(**{k: v.cpu() for k, v in probes["p0"].tensors.items()}).logits[0].float()
    torch.testing.assert_close(logits, base[0], atol=ATOL, rtol=0)
    # the live editor still works: its sites went back in after the save
    assert editor.route_of(image(1), PROMPT)[0] == 0 and editor.memory.modules
    assert all(editor.model.get_submodule(p) is m for p, m in editor.memory.modules.items())


# -- the built-in model --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world_cases(tmp_path_factory):
    from editscope.evaluation.data import load_records
    from editscope.world import builtin_path, load_world, write_edits

    path = write_edits(load_world(builtin_path()), "dev", tmp_path_factory.mktemp("world") / "dev", n=12)
    return load_records("world", path, path.parent)


def builtin_editor(vlm) -> ScopeMemory:
    from editscope.editors.reference import load_reference

    return build_editor("scopememory", vlm, load_memory_preset("builtin"), reference=load_reference("world", "builtin", 32))


def world_probes(vlm, cases) -> dict:
    probes = {}
    for i, case in enumerate(cases):
        r = case.request
        probes[f"edit{i}"] = vlm.encode(r.image, r.prompt, r.target)
        for kind in ("rephrase", "image_rephrase", "loc", "m_loc"):
            p = getattr(case, kind)
            if p is not None:
                answer = r.target if kind.endswith("rephrase") else p.answer
                probes[f"{kind}{i}"] = vlm.encode(p.image, p.prompt, answer)
        for j, p in enumerate(case.text_transfer[:1]):  # text-only questions about the subject
            probes[f"transfer{i}.{j}"] = vlm.encode(p.image, p.prompt, r.target)
        for j, p in enumerate(case.other_fact[:1] + case.near_miss[:1]):  # out of scope
            probes[f"other{i}.{j}"] = vlm.encode(p.image, p.prompt, p.answer)
    return probes


def test_builtin_export_loads_without_editscope_and_matches(world_cases, tmp_path) -> None:
    import editscope
    from editscope.images import load_image

    vlm = editscope.load("builtin", device=str(TEST_DEVICE))
    cases = [c for c in world_cases if c.image_rephrase is not None][:3]
    probes = world_probes(vlm, cases)
    with torch.no_grad():
        base = {name: vlm.forward(x)[0].float().cpu() for name, x in probes.items()}
    editor = builtin_editor(vlm)
    for i, case in enumerate(cases):
        r = case.request
        editor.edit(EditRequest(image=r.image, prompt=r.prompt, target=r.target, scope="broad" if i == 0 else "auto"))
    out = editor.save_pretrained(tmp_path / "routed", vlm.processor)
    first = cases[0].request
    picture = tmp_path / "edit0.png"
    load_image(first.image).save(picture)
    generate = {"gen_edit0": vlm.encode(first.image, first.prompt),
                "gen_render0": vlm.encode(cases[0].image_rephrase.image, cases[0].image_rephrase.prompt)}
    outputs, result = run_loader(out, tmp_path / "job", probes, generate, pad_id(vlm), max_new_tokens=8,
                                 processor={"image": str(picture), "text": vlm.prompt_text(first.prompt, True)})
    assert not result["editscope_loaded"] and not result["editscope_importable"]
    assert result["slots"] == len(cases) and result["bases"][0] == type(vlm.model).__name__
    diffs = compare(editor, probes, outputs)
    print("max abs logit difference per probe:", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert max(diffs.values()) <= ATOL, diffs
    routes = {name: outputs[name + ".route"].tolist() for name in probes}
    print("routes (slot, local, shared):", routes)
    for i in range(len(cases)):
        assert routes[f"edit{i}"] == [i, 1, routes[f"edit{i}"][2]]
        assert not torch.equal(outputs[f"edit{i}.logits"], base[f"edit{i}"])
    assert routes["image_rephrase0"] == [0, 0, 1]  # the broad edit's other render: shared write only
    for name in probes:
        if name.startswith(("loc", "m_loc")):
            assert routes[name] == [NO_SLOT, 0, 0], name
            assert torch.equal(outputs[name + ".logits"], base[name]), name  # the base model's logits
    for name, x in generate.items():
        with torch.no_grad():
            assert torch.equal(outputs[name + ".generated"], vlm.generate(x, 8)[0].cpu()), name
    prompt_ids = vlm.encode(first.image, first.prompt).tensors
    assert torch.equal(outputs["processor.input_ids"], prompt_ids["input_ids"].cpu())
    pixels = prompt_ids["pixel_values"].cpu()  # in the model's dtype
    assert torch.equal(outputs["processor.pixel_values"].to(pixels.dtype), pixels)


def test_builtin_store_export_merged_is_routed(world_cases, tmp_path) -> None:
    from editscope.store import EditStore

    cases = [c for c in world_cases if c.image_rephrase is not None][:2]
    store = EditStore.init(tmp_path / "store", "builtin", editor="scopememory", device=str(TEST_DEVICE))
    with store:
        for case in cases:
            r = case.request
            image_path = tmp_path / f"{case.case_id}.png"
            from editscope.images import load_image

            load_image(r.image).save(image_path)
            store.edit(EditRequest(image=image_path, prompt=r.prompt, target=r.target))
        out = store.export(tmp_path / "merged", merged=True)
        probes = world_probes(store.vlm, cases)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["merged"] is True and len(manifest["edits"]) == len(cases)
        assert (out / "slots.safetensors").exists() and (out / "modeling_scopememory.py").exists()
        outputs, result = run_loader(out, tmp_path / "job", probes, {}, pad_id(store.vlm))
        assert result["slots"] == len(cases) and not result["editscope_importable"]
        diffs = compare(store.editor, probes, outputs)
    print("store export, max abs logit difference:", max(diffs.values()))
    assert max(diffs.values()) <= ATOL, diffs


def test_builtin_export_routes_scope_examples_as_the_editor(tmp_path) -> None:
    import editscope
    from editscope.world import builtin_path, load_world
    from editscope.world.edits import make_records
    from editscope.world.render import fixed_render

    world = load_world(builtin_path())
    record = make_records(world, "dev", 1)[0]
    subject = world.subject(record["subject_index"])
    renders = {i: fixed_render(subject, "heldout", i, world.config.seed) for i in range(8)}
    vlm = editscope.load("builtin", device=str(TEST_DEVICE))
    editor = builtin_editor(vlm)
    prompt, target = record["src"], record["alt"]
    editor.edit(EditRequest(prompt=prompt, target=target, image=renders[0]))
    reached = [i for i in range(1, 8) if editor.route_of(renders[i], prompt)[0] == 0]
    assert len(reached) >= 2, reached  # the control: without examples the edit reaches these renders
    negative = reached[-1]
    # a re-edit of the fact with that render as a never example: the editor keeps it out
    editor.edit(EditRequest(prompt=prompt, target=target, image=renders[0], never=[renders[negative]]))
    assert editor.route_of(renders[negative], prompt)[0] == NO_SLOT
    probes = {f"render{i}": vlm.encode(img, prompt, target) for i, img in renders.items()}
    out = editor.save_pretrained(tmp_path / "routed", vlm.processor)
    with safe_open(str(out / "slots.safetensors"), "pt") as f:
        assert f.get_tensor("never").shape[0] == 1 and f.get_tensor("never_owner").tolist() == [0]
    outputs, result = run_loader(out, tmp_path / "job", probes, {}, pad_id(vlm))
    assert not result["editscope_loaded"]
    diffs = compare(editor, probes, outputs)  # every route equal, the never example's included
    assert outputs[f"render{negative}.route"].tolist() == [NO_SLOT, 0, 0]
    assert max(diffs.values()) <= ATOL, diffs
