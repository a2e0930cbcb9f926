"""The edit store with a ScopeMemory editor on the built-in model: init (the reference set in
the initial snapshot), three facts edited (one of them twice), replay on reopening to identical
logits, rollback to a snapshot, revert by slot (a re-edit gives the fact its earlier target
back; a single-edit fact loses its slot; an older edit of a re-edited fact changes nothing),
reopening after reverts, audit."""

from __future__ import annotations

import pytest
import torch

from editscope.editors.scopememory import ScopeMemory, load_memory_preset
from editscope.editors.scopememory.router import NO_SLOT
from editscope.store import EditStore, StoreError
from editscope.types import EditRequest

RE_EDIT = "1902"  # the second value of the first fact


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    """Three edits of the world's test split (distinct facts), images on disk."""
    from editscope.evaluation.data import load_records
    from editscope.world import builtin_path, load_world, write_edits

    path = write_edits(load_world(builtin_path()), "test", tmp_path_factory.mktemp("world") / "test", n=3)
    cases = load_records("world", path, path.parent)
    return [EditRequest(c.request.prompt, c.request.target, image=c.request.image) for c in cases]


def probes(facts) -> list[tuple]:
    """Each fact's edit input with its target, and with the re-edit's target."""
    return [(f.image, f.prompt, t) for f in facts for t in (f.target, RE_EDIT)]


def logits_on(store: EditStore, facts) -> torch.Tensor:
    return torch.cat([store.editor.logits(*p).reshape(-1) for p in probes(facts)])


def holds(store: EditStore, request: EditRequest, target: str) -> bool:
    return store.editor.score(request.image, request.prompt, target).token_accuracy == 1.0


def test_scopememory_store_workflow(facts, tmp_path):
    directory = tmp_path / "store"
    a, b, c = facts
    with EditStore.init(directory, "builtin", editor="scopememory", snapshot_every=10) as store:
        editor = store.editor
        assert isinstance(editor, ScopeMemory)
        assert store.manifest["editor"]["name"] == "scopememory"
        assert store.manifest["editor"]["config"] == load_memory_preset("builtin").to_dict()
        # the reference set came before the initial snapshot, which holds the router centres
        (initial,) = store.snapshots()
        state = store.snapshot_files.read(initial.name, initial.file, initial.sha256)
        assert state["scopememory.router.reference_text"].shape[0] == load_memory_preset("builtin").reference_size
        assert torch.count_nonzero(state["scopememory.router.centre_text"]) > 0
        base = logits_on(store, facts)

        recorded = {}
        for request in (a, b, c, EditRequest(a.prompt, RE_EDIT, image=a.image)):
            record = store.edit(request)
            assert record.status == "applied", record.error
            assert "rehearsed" in record.result
            recorded[record.id] = logits_on(store, facts)
        assert editor.size == 3  # one slot per fact: the re-edit replaced the first fact's slot
        assert holds(store, a, RE_EDIT) and holds(store, b, b.target) and holds(store, c, c.target)
        assert not torch.equal(recorded[4], base)
        with pytest.raises(StoreError, match="fact_id"):
            store.edit(EditRequest(a.prompt, "x", image=a.image, fact_id="f"))
        assert store.applied_ids() == [1, 2, 3, 4]

    # reopening replays the four edits from the initial snapshot: identical logits
    with EditStore.open(directory) as store:
        assert torch.equal(logits_on(store, facts), recorded[4])
        store.snapshot("four")
        store.rollback(to=2)
        assert torch.equal(logits_on(store, facts), recorded[2])
        assert store.editor.size == 2
        store.rollback(to="four")
        assert torch.equal(logits_on(store, facts), recorded[4])
        assert store.applied_ids() == [1, 2, 3, 4]

        # revert the re-edit: the slot of the first fact gets edit 1 again, nothing else changes
        change = store.revert(4)
        assert (change.method, change.reapplied, change.removed) == ("slot", 1, (4,))
        assert store.editor.size == 3
        assert holds(store, a, a.target) and not holds(store, a, RE_EDIT)
        assert holds(store, b, b.target) and holds(store, c, c.target)
        assert store.get(4).status == "reverted" and store.applied_ids() == [1, 2, 3]

        # revert a single-edit fact: its slot is gone and its input routes nowhere
        change = store.revert(2)
        assert (change.method, change.reapplied) == ("slot", None)
        assert store.editor.size == 2
        assert store.editor.route_of(b.image, b.prompt)[0] == NO_SLOT
        assert holds(store, a, a.target) and holds(store, c, c.target)

        # re-edit the first fact, then revert its older edit: the later one already replaced
        # the slot, so the state stays as it is and only the journal changes
        store.edit(EditRequest(a.prompt, RE_EDIT, image=a.image))
        before = {k: v.clone() for k, v in store.editor.state_dict().items()}
        change = store.revert(1)
        assert change.method == "unchanged"
        after = store.editor.state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        assert store.applied_ids() == [3, 5]
        with pytest.raises(StoreError, match="not applied"):
            store.revert(1)

        report = store.audit()
        assert report.state == (3, 5)
        assert report.holding == [3, 5] and report.failing == [], report.to_dict()
        assert [e.payload["method"] for e in store.journal.events("revert")] == ["slot", "slot", "unchanged"]
        reverted = logits_on(store, facts)

    # reopening after slot reverts restores the state they saved: identical logits
    with EditStore.open(directory) as store:
        assert torch.equal(logits_on(store, facts), reverted)
        assert store.editor.size == 2
        assert store.editor.route_of(b.image, b.prompt)[0] == NO_SLOT


def test_a_failed_slot_revert_leaves_state_and_journal_as_they_were(facts, tmp_path, monkeypatch):
    import yaml

    a, b, _ = facts
    preset = tmp_path / "small.yaml"  # a YAML preset: the built-in one with a smaller reference set
    preset.write_text(yaml.safe_dump({**load_memory_preset("builtin").to_dict(), "reference_size": 16}))
    with EditStore.init(tmp_path / "store", "builtin", str(preset), editor="scopememory") as store:
        assert store.editor.config.reference_size == 16 and store.editor.reference[0].shape[0] == 16
        store.edit(a)
        store.edit(b)
        store.edit(EditRequest(a.prompt, RE_EDIT, image=a.image))
        before = {k: v.clone() for k, v in store.editor.state_dict().items()}
        events, snapshots = len(store.journal.events("revert")), len(store.snapshots())

        def broken(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(store.snapshot_files, "write", broken)
        with pytest.raises(OSError, match="disk full"):
            store.revert(3)  # forget + edit 1 again, then the snapshot fails
        after = store.editor.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert store.applied_ids() == [1, 2, 3]
        assert len(store.journal.events("revert")) == events and len(store.snapshots()) == snapshots


def test_init_rejects_unknown_presets_and_editors(tmp_path):
    with pytest.raises(StoreError, match="unknown preset"):
        EditStore.init(tmp_path / "a", "builtin", "no-such-preset", editor="scopememory")
    with pytest.raises(StoreError, match="unknown store editor"):
        EditStore.init(tmp_path / "b", "builtin", editor="grace")


def test_a_missing_initial_snapshot_is_rebuilt_on_the_base_model_loaded_again(facts, tmp_path):
    """No usable snapshot: the open model carries ScopeMemory's slot sites, so the initial state
    (reference set and router centres included) is rebuilt on the base model loaded again."""
    from editscope.store.check import check_store

    directory = tmp_path / "store"
    with EditStore.init(directory, "builtin", editor="scopememory", snapshot_every=10) as store:
        base = logits_on(store, facts)
        for request in facts[:2]:
            assert store.edit(request).status == "applied"
        edited = logits_on(store, facts)
        (initial,) = store.snapshots()
    assert not torch.equal(edited, base)
    (directory / "snapshots" / initial.file).unlink()
    with EditStore.open(directory) as store:
        assert torch.equal(logits_on(store, facts), edited)
        assert store.rollback(to="initial").from_snapshot == "initial (rebuilt)"
        assert torch.equal(logits_on(store, facts), base)
    report = check_store(directory, repair=True)
    assert [p.repaired for p in report.problems] == [
        "rebuilt from initial (rebuilt) plus replay (bit-exact: SHA-256 as recorded)"], report.to_dict()
    assert check_store(directory).problems == []
