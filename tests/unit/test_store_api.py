"""The EditStore's logic on a fake editor: journaling, snapshots, rollback, revert, audit,
replay on open, recovery of abandoned edits, export, and bad input leaving the store as it
was."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
import torch

from editscope.store import EditStore, StoreError
from editscope.store import journal as jr
from editscope.types import EditRequest, Probe
from store_fakes import FakeBackend, make_checkpoint

BACKEND = FakeBackend()


def journal_rows(directory: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(directory / "journal.sqlite") as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}


def store_files(directory: Path) -> dict[str, str]:
    """Every file but the SQLite files and the lock, by content hash."""
    skip = ("journal.sqlite", "lock")
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.startswith(skip)
    }


def fingerprint_of(directory: Path) -> tuple:
    return journal_rows(directory), store_files(directory)


@pytest.fixture
def store_dir(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "base", seed=1)
    directory = tmp_path / "store"
    EditStore.init(directory, checkpoint, "tiny", snapshot_every=3, backend=BACKEND, editor="scopeedit").close()
    return directory


def open_store(directory: Path, **kwargs) -> EditStore:
    return EditStore.open(directory, backend=BACKEND, **kwargs)


def request(images, i: int, target: str | None = None) -> EditRequest:
    return EditRequest(prompt=f"What is shown? ({i % 4})", target=target or f"thing {i}", image=images[i % 3])


def probe_logits(store: EditStore, images) -> torch.Tensor:
    return torch.stack([store.editor.logits(images[i % 3], f"q{i}", "t") for i in range(4)])


def test_init_records_the_base_model_and_an_initial_snapshot(store_dir):
    manifest = json.loads((store_dir / "store.json").read_text())
    assert manifest["base_model"]["fingerprint"].startswith("sha256:")
    assert manifest["editor"]["config"] == {"seed": 3, "preset": "tiny"}
    with open_store(store_dir) as store:
        assert [s.name for s in store.snapshots()] == ["initial"]
        assert store.snapshots()[0].lineage == ()


def test_init_refuses_a_non_empty_directory(tmp_path, store_dir):
    with pytest.raises(StoreError, match="not an empty directory"):
        EditStore.init(store_dir, tmp_path / "base", backend=BACKEND, editor="scopeedit")


def test_edit_is_journaled_with_its_result(store_dir, images):
    with open_store(store_dir) as store:
        record = store.edit(request(images, 0), tags=["colours"], rephrases=["What is it?"])
        assert record.status == jr.APPLIED
        assert record.image_sha256 == hashlib.sha256(images[0].read_bytes()).hexdigest()
        assert record.tags == ("colours",) and record.rephrases == ("What is it?",)
        assert set(record.result) >= {"loss_before", "loss_after", "active_groups", "gates", "wall_time_s"}
        assert len(record.config_hash) == 16
        assert store.images.contains(record.image_sha256)
        rejected = store.edit(request(images, 1, target="REJECT me"))
        assert rejected.status == jr.REJECTED and "fake rejection" in rejected.error
        assert [r.id for r in store.log(status="applied")] == [record.id]
        assert [r.id for r in store.log(tag="colours")] == [record.id]


def test_a_failure_midway_leaves_the_state_as_before(store_dir, images):
    with open_store(store_dir) as store:
        store.edit(request(images, 0))
        before = probe_logits(store, images)
        with pytest.raises(RuntimeError, match="midway"):
            store.edit(request(images, 1, target="CRASH"))
        assert torch.equal(probe_logits(store, images), before)
        assert store.log()[-1].status == jr.REJECTED


def test_snapshots_every_k_edits(store_dir, images):
    with open_store(store_dir) as store:
        for i in range(7):
            store.edit(request(images, i))
        auto = [s for s in store.snapshots() if s.trigger == "auto"]
        assert [s.lineage for s in auto] == [(1, 2, 3), (1, 2, 3, 4, 5, 6)]


def test_rollback_to_an_edit_gives_the_state_of_then(store_dir, images):
    with open_store(store_dir) as store:
        recorded = {}
        for i in range(5):
            record = store.edit(request(images, i))
            recorded[record.id] = probe_logits(store, images)
        change = store.rollback(to=2)
        assert torch.equal(probe_logits(store, images), recorded[2])
        assert change.removed == (3, 4, 5) and change.applied == (1, 2)
        assert [r.status for r in store.log()] == ["applied"] * 2 + ["rolled_back"] * 3
        assert store.journal.events("rollback")[0].payload["removed"] == [3, 4, 5]
        # editing goes on from the rolled-back state
        store.edit(request(images, 9))
        assert store.applied_ids() == [1, 2, 6]


def test_rollback_to_a_snapshot_restores_its_edits(store_dir, images):
    with open_store(store_dir) as store:
        store.edit(request(images, 0))
        store.edit(request(images, 1))
        store.snapshot("two")
        expected = probe_logits(store, images)
        store.rollback(to=1)
        store.edit(request(images, 2))
        change = store.rollback(to="two")
        assert torch.equal(probe_logits(store, images), expected)
        assert change.restored == (2,) and change.removed == (3,)
        assert store.applied_ids() == [1, 2]


def test_revert_equals_never_having_made_the_edit(tmp_path, store_dir, images):
    requests = [request(images, i) for i in range(6)]
    with open_store(store_dir) as store:
        for r in requests:
            store.edit(r)
        change = store.revert(4)
        reverted = probe_logits(store, images)
        assert change.from_snapshot.startswith("auto-")  # the snapshot after edit 3
        assert store.get(4).status == jr.REVERTED
        report = store.audit()
    assert report.state == (1, 2, 3, 5, 6)
    assert report.failing == [] and 4 not in report.state
    # a fresh store given the same edits without the fourth reaches the same state
    other = tmp_path / "other"
    EditStore.init(other, tmp_path / "base", "tiny", backend=BACKEND, editor="scopeedit").close()
    with open_store(other) as fresh:
        for i, r in enumerate(requests):
            if i != 3:
                fresh.edit(r)
        assert torch.equal(probe_logits(fresh, images), reverted)


def test_audit_reports_superseded_and_failing_edits(store_dir, images):
    with open_store(store_dir) as store:
        first = store.edit(request(images, 0, target="red"), rephrases=["Which colour?"])
        store.edit(request(images, 1, target="green"))
        later = store.edit(request(images, 0, target="crimson"))
        store.editor.memory.zero_()  # simulate edit 2 being overwritten by drift
        store.editor.memory[:] = 0
        report = store.audit()
        assert report.entry(first.id).superseded_by == later.id
        assert report.superseded == [first.id]
        assert set(report.failing) == {2, 3}
        assert len(report.entry(first.id).rephrases) == 1
        assert store.audits()[-1].payload["failing"] == report.failing


def test_reopening_replays_to_identical_state(store_dir, images):
    with open_store(store_dir) as store:
        for i in range(5):  # snapshot after 3, then two edits to replay
            store.edit(request(images, i))
        expected = probe_logits(store, images)
        calls = store.editor.calls
    with open_store(store_dir) as store:
        assert torch.equal(probe_logits(store, images), expected)
        assert store.editor.calls == 2  # only the edits after the last snapshot were replayed
    assert calls == 5


def test_an_abandoned_pending_edit_is_marked_rejected_on_open(store_dir, images):
    with open_store(store_dir) as store:
        store.edit(request(images, 0))
        expected = probe_logits(store, images)
        # what a process killed in the middle of editor.edit leaves behind
        from editscope.store.journal import EditDraft

        store.journal.add_edit(EditDraft("q", "t", "auto", None))
    with open_store(store_dir) as store:
        assert torch.equal(probe_logits(store, images), expected)
        assert [r.status for r in store.log()] == ["applied", "rejected"]
        assert "abandoned" in store.log()[-1].error
        assert store.journal.events("recover")[0].payload == {"abandoned": [2]}


def test_a_second_writer_is_refused(store_dir):
    with open_store(store_dir):
        with pytest.raises(StoreError, match="open in another process"):
            open_store(store_dir)
        with open_store(store_dir, load_model=False) as reader:
            assert reader.log() == []


def test_wrong_base_model_is_an_error_and_changes_nothing(tmp_path, store_dir, images):
    with open_store(store_dir) as store:
        store.edit(request(images, 0))
    before = fingerprint_of(store_dir)
    other = make_checkpoint(tmp_path / "other-base", seed=2)
    with pytest.raises(StoreError, match="wrong base model"):
        open_store(store_dir, model_source=other)
    make_checkpoint(tmp_path / "base", seed=2)  # the recorded checkpoint overwritten
    with pytest.raises(StoreError, match="wrong base model"):
        open_store(store_dir)
    assert fingerprint_of(store_dir) == before


def test_missing_image_is_an_error_and_changes_nothing(tmp_path, store_dir, images):
    with open_store(store_dir) as store:
        store.edit(request(images, 0))
        before = fingerprint_of(store_dir)
        with pytest.raises(StoreError, match="image file not found"):
            store.edit(EditRequest("What is it?", "x", image=tmp_path / "missing.png"))
        bad_anchor = EditRequest("What is it?", "x", image=images[1], anchors=(Probe("a", "b", tmp_path / "no.png"),))
        with pytest.raises(StoreError, match="image file not found"):
            store.edit(bad_anchor)
        with pytest.raises(StoreError, match="image file not found"):
            store.query(tmp_path / "missing.png", "What is it?")
        assert fingerprint_of(store_dir) == before
        # a stored image lost from the store: replaying it is a clear error, nothing changes
        store.edit(request(images, 1))
        store.edit(request(images, 2))
        stored = store.images.path_for(store.get(3).image_sha256)
        stored.unlink()
        before, logits = fingerprint_of(store_dir), probe_logits(store, images)
        with pytest.raises(StoreError, match="cannot replay edit 3: image .* is missing"):
            store.revert(2)
        assert fingerprint_of(store_dir) == before
        assert torch.equal(probe_logits(store, images), logits)


def test_unknown_edit_id_is_an_error_and_changes_nothing(store_dir, images):
    with open_store(store_dir) as store:
        store.edit(request(images, 0))
        store.edit(request(images, 1, target="REJECT"))
        before, logits = fingerprint_of(store_dir), probe_logits(store, images)
        with pytest.raises(StoreError, match="no edit with id 42"):
            store.revert(42)
        with pytest.raises(StoreError, match="no edit with id 42"):
            store.rollback(to=42)
        with pytest.raises(StoreError, match="no snapshot named 'nope'"):
            store.rollback(to="nope")
        with pytest.raises(StoreError, match="status is rejected"):
            store.revert(2)
        with pytest.raises(StoreError, match="reserved"):
            store.snapshot("initial")
        with pytest.raises(StoreError, match="reserved"):
            store.snapshot("auto-9")
        with pytest.raises(StoreError, match="invalid snapshot name"):
            store.snapshot("12")
        assert fingerprint_of(store_dir) == before
        assert torch.equal(probe_logits(store, images), logits)
        store.snapshot("mine")
        with pytest.raises(StoreError, match="a snapshot named 'mine' already exists"):
            store.snapshot("mine")


def test_export_adapter_and_merged(tmp_path, store_dir, images):
    with open_store(store_dir) as store:
        store.edit(request(images, 0), tags=["a"])
        store.edit(request(images, 1, target="REJECT"))
        adapter = store.export(tmp_path / "adapter")
        merged = store.export(tmp_path / "merged", merged=True)
        with pytest.raises(StoreError, match="not an empty directory"):
            store.export(tmp_path / "adapter")
        assert [e.payload["merged"] for e in store.journal.events("export")] == [False, True]
    manifest = json.loads((adapter / "manifest.json").read_text())
    assert [e["id"] for e in manifest["edits"]] == [1] and manifest["merged"] is False
    assert {p.name for p in adapter.iterdir()} == {"editor_state.safetensors", "editor_config.json", "manifest.json"}
    assert {p.name for p in merged.iterdir()} == {"model.safetensors", "processor.json", "manifest.json"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_failed_export_leaves_nothing_behind(tmp_path, store_dir, images, monkeypatch):
    with open_store(store_dir) as store:
        store.edit(request(images, 0))

        def refuse():
            raise ValueError("edits written through a LayerNorm on the code cannot be merged into W")

        monkeypatch.setattr(store.editor, "merge", refuse)
        before = fingerprint_of(store_dir)
        with pytest.raises(StoreError, match="cannot export to .*LayerNorm"):
            store.export(tmp_path / "out", merged=True)
        # Only the attempt is journaled (an export_start event: how a crash's staging folder is found).
        rows, files = fingerprint_of(store_dir)
        assert rows["events"][:-1] == before[0]["events"] and rows["events"][-1][2] == "export_start"
        assert {**rows, "events": [], "sqlite_sequence": []} == {**before[0], "events": [], "sqlite_sequence": []}
        assert files == before[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "img0.png", "img1.png", "img2.png", "store"]


def test_weights_fingerprint_sees_every_byte_name_and_dtype():
    from editscope.store.backend import weights_fingerprint
    from store_fakes import FakeModel

    first, same, other = FakeModel(1), FakeModel(1), FakeModel(2)
    assert weights_fingerprint(first) == weights_fingerprint(same)
    assert weights_fingerprint(first) != weights_fingerprint(other)
    with torch.no_grad():
        same.weight[3, 5] = torch.nextafter(same.weight[3, 5], torch.tensor(10.0, dtype=torch.float64))
    assert weights_fingerprint(first) != weights_fingerprint(same)
    assert weights_fingerprint(first) != weights_fingerprint(FakeModel(1).to(torch.float32))
    bf16 = FakeModel(1).to(torch.bfloat16)
    assert weights_fingerprint(bf16) == weights_fingerprint(FakeModel(1).to(torch.bfloat16))


def test_an_edit_that_cannot_be_journaled_as_applied_is_undone(store_dir, images, monkeypatch):
    with open_store(store_dir) as store:
        store.edit(request(images, 0))
        before = probe_logits(store, images)
        original = store.journal.set_status

        def failing(ids, status, **kwargs):
            if status == jr.APPLIED:
                raise OSError("disk full")
            return original(ids, status, **kwargs)

        monkeypatch.setattr(store.journal, "set_status", failing)
        with pytest.raises(OSError, match="disk full"):
            store.edit(request(images, 1))
        assert torch.equal(probe_logits(store, images), before)
        assert store.get(2).status == jr.PENDING  # marked abandoned when the store is next opened


def test_a_rollback_that_cannot_be_journaled_changes_nothing(store_dir, images, monkeypatch):
    with open_store(store_dir) as store:
        for i in range(3):
            store.edit(request(images, i))
        before, logits = fingerprint_of(store_dir), probe_logits(store, images)

        def failing(kind, payload):
            raise OSError("disk full")

        monkeypatch.setattr(store.journal, "add_event", failing)
        with pytest.raises(OSError, match="disk full"):
            store.rollback(to=1)
        with pytest.raises(OSError, match="disk full"):
            store.revert(2)
        assert fingerprint_of(store_dir) == before
        assert torch.equal(probe_logits(store, images), logits)


@pytest.mark.parametrize("text", ["\udcff", "", "  "])
def test_a_query_prompt_or_tag_filter_that_is_not_text_is_an_error_naming_it(store_dir, images, text):
    """An undecodable byte on the command line arrives as a lone surrogate (U+DCFF): a clear
    error naming the prompt or the tag, not the tokenizer's TypeError."""
    with open_store(store_dir) as store:
        store.edit(request(images, 0))
        with pytest.raises(StoreError, match="the query's prompt"):
            store.query(images[0], text)
        with pytest.raises(StoreError, match="the tag to filter by"):
            store.log(tag=text)
