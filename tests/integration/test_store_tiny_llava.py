"""The edit store on a tiny LLaVA saved as a checkpoint: rollback, revert + audit, replay on
reopening, merged export loaded by plain transformers, and bad input leaving the store as it
was."""

from __future__ import annotations

import json

import pytest
import torch

from editscope.store import EditStore, StoreError
from editscope.types import EditRequest
from store_support import (
    EDITS,
    make_images,
    probe_logits,
    save_tiny_checkpoint,
    store_state,
    write_preset,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("store-world")
    return {
        "base": save_tiny_checkpoint(root / "base"),
        "images": make_images(root / "images"),
        "preset": write_preset(root),
    }


def new_store(world, directory, snapshot_every=2) -> EditStore:
    return EditStore.init(directory, world["base"], str(world["preset"]), snapshot_every=snapshot_every, editor="scopeedit")


def request(world, i: int) -> EditRequest:
    prompt, target = EDITS[i]
    return EditRequest(prompt, target, image=world["images"][i])


def test_rollback_gives_the_logits_of_then(world, tmp_path):
    with new_store(world, tmp_path / "store", snapshot_every=10) as store:
        base = probe_logits(store.editor, world["images"])
        recorded = {}
        for i in range(3):
            record = store.edit(request(world, i))
            assert record.status == "applied"
            recorded[record.id] = probe_logits(store.editor, world["images"])
            if i == 0:
                store.snapshot("first")
        assert not torch.equal(recorded[3], recorded[2])
        store.rollback(to=2)
        assert torch.equal(probe_logits(store.editor, world["images"]), recorded[2])
        assert [r.status for r in store.log()] == ["applied", "applied", "rolled_back"]
        store.rollback(to="first")
        assert torch.equal(probe_logits(store.editor, world["images"]), recorded[1])
        store.rollback(to="initial")
        assert torch.equal(probe_logits(store.editor, world["images"]), base)
        assert [e.payload["target"] for e in store.journal.events("rollback")] == ["edit 2", "first", "initial"]
        assert [r.status for r in store.log()] == ["rolled_back"] * 3


def test_revert_then_audit_and_replay_after_reopening(world, tmp_path):
    directory = tmp_path / "store"
    with new_store(world, directory) as store:
        for i in range(4):
            store.edit(request(world, i), rephrases=["what is this ?"] if i != 1 else ())
        before = store.audit()
        assert before.holding == [1, 2, 3, 4], before.to_dict()
        change = store.revert(2)
        assert change.from_snapshot == "initial"  # the auto snapshot after edit 2 contains it
        after = store.audit()
        reverted = probe_logits(store.editor, world["images"])
        assert store.get(2).status == "reverted"
    assert after.state == (1, 3, 4)
    assert after.holding == [1, 3, 4] and after.failing == []
    # reopening restores the snapshot and replays: identical logits
    with EditStore.open(directory) as reopened:
        assert torch.equal(probe_logits(reopened.editor, world["images"]), reverted)
        assert [a.payload["state"] for a in reopened.audits()] == [[1, 2, 3, 4], [1, 3, 4]]
    # and they equal a store that never saw edit 2
    with new_store(world, tmp_path / "fresh") as fresh:
        for i in (0, 2, 3):
            fresh.edit(request(world, i))
        assert torch.equal(probe_logits(fresh.editor, world["images"]), reverted)


def test_export_merged_loads_with_plain_transformers(world, tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    with new_store(world, tmp_path / "store") as store:
        for i in range(2):
            store.edit(request(world, i), tags=["export"])
        out = store.export(tmp_path / "merged", merged=True)
        inputs = [store.vlm.encode(world["images"][i], *EDITS[i]) for i in range(2)]
        with torch.no_grad():
            expected = [store.vlm.forward(x)[0] for x in inputs]
    model = LlavaForConditionalGeneration.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    assert type(processor).__name__ == "LlavaProcessor"
    assert not any("site" in name or "B_local" in name for name in model.state_dict())
    for x, reference in zip(inputs, expected):
        with torch.no_grad():
            logits = model(**x.tensors).logits[0]
        torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["merged"] is True
    assert [(e["id"], e["prompt"], e["target"]) for e in manifest["edits"]] == [
        (1, *EDITS[0]),
        (2, *EDITS[1]),
    ]


def test_export_adapter_loads_into_a_fresh_editor(world, tmp_path):
    from editscope import models
    from editscope.config import load_preset
    from editscope.editors.recursive import ScopeEdit

    with new_store(world, tmp_path / "store") as store:
        store.edit(request(world, 0))
        out = store.export(tmp_path / "adapter")
        expected = probe_logits(store.editor, world["images"])
    editor = ScopeEdit(models.load(world["base"]), load_preset(str(world["preset"])))
    editor.load(out)
    assert torch.equal(probe_logits(editor, world["images"]), expected)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["merged"] is False and [e["id"] for e in manifest["edits"]] == [1]


def test_bad_input_is_a_clear_error_and_leaves_the_store_unchanged(world, tmp_path):
    directory = tmp_path / "store"
    with new_store(world, directory) as store:
        store.edit(request(world, 0))
        snapshot = store.snapshot("one")
        store.edit(request(world, 1))
        logits = probe_logits(store.editor, world["images"])
        before = store_state(directory)
        with pytest.raises(StoreError, match="image file not found"):
            store.edit(EditRequest(*EDITS[2], image=tmp_path / "missing.png"))
        with pytest.raises(StoreError, match="no edit with id 7"):
            store.revert(7)
        with pytest.raises(StoreError, match="no edit with id 7"):
            store.rollback(to=7)
        assert store_state(directory) == before
        assert torch.equal(probe_logits(store.editor, world["images"]), logits)
    # another base model (same architecture, other weights)
    other = save_tiny_checkpoint(tmp_path / "other", seed=1)
    with pytest.raises(StoreError, match="wrong base model"):
        EditStore.open(directory, other)
    assert store_state(directory) == before
    # a corrupt snapshot file
    path = directory / "snapshots" / snapshot.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    before = store_state(directory)
    with EditStore.open(directory) as reopened:  # an earlier snapshot plus replay instead (issue 22, defect 6)
        assert torch.equal(probe_logits(reopened.editor, world["images"]), logits)
    assert store_state(directory) == before


def test_a_reference_prior_needs_a_world_model(world, tmp_path):
    import yaml

    from editscope.config import load_preset

    preset = tmp_path / "prior.yaml"
    preset.write_text(yaml.safe_dump(load_preset(str(world["preset"])).replace(reference_weight=10.0).to_dict()))
    with pytest.raises(StoreError, match="not trained on a world"):
        EditStore.init(tmp_path / "store", world["base"], str(preset), editor="scopeedit")
    assert not (tmp_path / "store").exists()


def test_a_missing_initial_snapshot_is_rebuilt_on_a_real_editor(world, tmp_path):
    """No usable snapshot at all: the initial state is rebuilt on the base model loaded again
    (the open model carries the editor's modules, which a second editor cannot wrap)."""
    from editscope.store.check import check_store

    directory = tmp_path / "store"
    with new_store(world, directory, snapshot_every=10) as store:
        base = probe_logits(store.editor, world["images"])
        for i in range(2):
            assert store.edit(request(world, i)).status == "applied"
        edited = probe_logits(store.editor, world["images"])
        initial = store.journal.get_snapshot("initial")
    assert not torch.equal(edited, base)
    (directory / "snapshots" / initial.file).unlink()
    with EditStore.open(directory) as store:
        assert torch.equal(probe_logits(store.editor, world["images"]), edited)
        change = store.rollback(to="initial")
        assert change.from_snapshot == "initial (rebuilt)"
        assert torch.equal(probe_logits(store.editor, world["images"]), base)
    report = check_store(directory, repair=True)
    assert [p.repaired for p in report.problems] == ["rebuilt from initial (rebuilt) plus replay (bit-exact: SHA-256 as recorded)"], report.to_dict()
    assert check_store(directory).problems == []
