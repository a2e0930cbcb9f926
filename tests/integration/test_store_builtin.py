"""The edit store on the shipped built-in model: edits
from the world's test split, rollback to identical logits, revert + audit, replay after
reopening, and a merged export that plain transformers loads."""

from __future__ import annotations

import pytest
import torch

from editscope.store import EditStore
from editscope import world as world_module
from editscope.types import EditRequest



@pytest.fixture(scope="module")
def edits(tmp_path_factory):
    """Three edit records of the world's test split, their images written to disk."""
    from editscope.world.edits import record_images

    root = tmp_path_factory.mktemp("builtin-edits")
    world = world_module.load_world()
    records = world_module.make_records(world, "test", n=3)
    for record in records:
        for relative, image in record_images(world, record).items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            image.save(root / relative)
    return [
        {"request": EditRequest(r["src"], r["alt"], image=root / r["image"]), "rephrase": r["rephrase"]}
        for r in records
    ]


def logits_on(store: EditStore, edits) -> torch.Tensor:
    rows = [store.editor.logits(e["request"].image, e["request"].prompt, e["request"].target) for e in edits]
    return torch.cat([r.reshape(-1) for r in rows])


def test_store_workflow_on_the_builtin_model(edits, tmp_path):
    from transformers import LlavaForConditionalGeneration

    directory = tmp_path / "store"
    with EditStore.init(directory, "builtin", snapshot_every=2, editor="scopeedit") as store:
        assert store.manifest["editor"]["preset"] == "builtin"
        recorded = []
        for e in edits:
            record = store.edit(e["request"], rephrases=[e["rephrase"]])
            assert record.status == "applied", record.error
            recorded.append(logits_on(store, edits))
        assert store.audit().entry(3).holds
        store.rollback(to=2)
        assert torch.equal(logits_on(store, edits), recorded[1])
        (auto,) = [s for s in store.snapshots() if s.trigger == "auto" and s.lineage == (1, 2)]
        store.rollback(to=auto.name)  # the automatic snapshot after edit 2: the same state
        assert torch.equal(logits_on(store, edits), recorded[1])
        store.revert(1)
        report = store.audit()
        assert report.state == (2,)
        reverted = logits_on(store, edits)
        out = store.export(tmp_path / "merged", merged=True)
        inputs = store.vlm.encode(edits[1]["request"].image, edits[1]["request"].prompt, edits[1]["request"].target)
        with torch.no_grad():
            expected = store.vlm.forward(inputs)[0]
    with EditStore.open(directory) as reopened:
        assert torch.equal(logits_on(reopened, edits), reverted)
    model = LlavaForConditionalGeneration.from_pretrained(out).eval()
    with torch.no_grad():
        logits = model(**inputs.tensors).logits[0]
    tolerance = 1e-4 if expected.dtype == torch.float32 else 5e-2  # the checkpoint may be half precision
    torch.testing.assert_close(logits.float(), expected.float(), atol=tolerance, rtol=tolerance)


def test_a_store_folds_the_reference_prior_once_into_its_initial_snapshot(tmp_path):
    from editscope.config import load_preset
    import yaml

    preset = tmp_path / "prior.yaml"
    cfg = load_preset("builtin").replace(reference_weight=1000.0, reference_size=8)
    preset.write_text(yaml.safe_dump(cfg.to_dict()))
    with EditStore.init(tmp_path / "store", "builtin", str(preset), editor="scopeedit") as store:
        folded = {p: s.P_local.clone() for p, s in store.editor.sites.items()}
    assert all(not torch.allclose(p, torch.eye(p.shape[0])) for p in folded.values())
    with EditStore.open(tmp_path / "store") as store:  # loaded from the initial snapshot
        for path, site in store.editor.sites.items():
            assert torch.equal(site.P_local, folded[path]), path
