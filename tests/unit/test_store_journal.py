"""The SQLite journal: rows, statuses, tags, snapshots, events, transactions, persistence."""

from __future__ import annotations

import sqlite3

import pytest

from editscope.store import journal as jr
from editscope.store.journal import AnchorRecord, EditDraft, SQLiteJournal


def draft(prompt: str = "What is this?", target: str = "a cat", tags: tuple[str, ...] = ()) -> EditDraft:
    return EditDraft(
        prompt=prompt,
        target=target,
        scope="auto",
        image_sha256="ab" * 32,
        tags=tags,
        rephrases=("What do you see?",),
        anchors=(AnchorRecord("Capital of France?", "Paris"),),
        config_hash="0123456789abcdef",
    )


@pytest.fixture
def journal(tmp_path):
    j = SQLiteJournal(tmp_path / "journal.sqlite", create=True)
    yield j
    j.close()


def test_new_edit_is_pending_with_all_fields(journal):
    edit_id = journal.add_edit(draft(tags=("fix", "cats")))
    record = journal.get_edit(edit_id)
    assert record.status == jr.PENDING
    assert (record.prompt, record.target, record.scope) == ("What is this?", "a cat", "auto")
    assert record.image_sha256 == "ab" * 32
    assert record.tags == ("cats", "fix")
    assert record.rephrases == ("What do you see?",)
    assert record.anchors == (AnchorRecord("Capital of France?", "Paris"),)
    assert record.config_hash == "0123456789abcdef"
    assert record.result is None and record.error is None


def test_status_changes_keep_the_row_and_store_the_result(journal):
    first, second = journal.add_edit(draft()), journal.add_edit(draft(target="a dog"))
    journal.set_status([first], jr.APPLIED, result={"loss_before": 2.5, "active_groups": ["layer.1"]})
    journal.set_status([second], jr.REJECTED, error="non-finite update")
    assert journal.get_edit(first).result == {"loss_before": 2.5, "active_groups": ["layer.1"]}
    assert journal.get_edit(second).error == "non-finite update"
    journal.set_status([first], jr.REVERTED)
    assert journal.get_edit(first).status == jr.REVERTED
    assert journal.get_edit(first).result["loss_before"] == 2.5  # the result is kept
    assert [r.id for r in journal.edits()] == [first, second]


def test_filters_by_tag_and_status(journal):
    a = journal.add_edit(draft(tags=("x",)))
    b = journal.add_edit(draft(tags=("x", "y")))
    c = journal.add_edit(draft(tags=("y",)))
    journal.set_status([a, c], jr.APPLIED)
    assert [r.id for r in journal.edits(tag="x")] == [a, b]
    assert [r.id for r in journal.edits(status=jr.APPLIED)] == [a, c]
    assert [r.id for r in journal.edits(tag="y", status=jr.APPLIED)] == [c]
    assert journal.applied_ids() == [a, c]
    with pytest.raises(ValueError, match="unknown edit status"):
        journal.edits(status="done")


def test_unknown_status_or_id_is_an_error_and_changes_nothing(journal):
    a = journal.add_edit(draft())
    with pytest.raises(ValueError, match="unknown edit status"):
        journal.set_status([a], "done")
    with pytest.raises(KeyError, match="no edit with id 99"):
        journal.set_status([a, 99], jr.APPLIED)
    assert journal.get_edit(a).status == jr.PENDING  # the whole call was rolled back
    assert journal.get_edit(99) is None


def test_transaction_is_all_or_nothing(journal):
    a = journal.add_edit(draft())
    with pytest.raises(RuntimeError):
        with journal.transaction():
            journal.set_status([a], jr.APPLIED)
            journal.add_event("rollback", {"to": 1})
            raise RuntimeError("stop")
    assert journal.get_edit(a).status == jr.PENDING
    assert journal.events() == []


def test_snapshots_and_events(journal):
    snap = journal.add_snapshot("initial", "initial", "initial-1.safetensors", "cd" * 32, [])
    journal.add_snapshot("before-cats", "manual", "b.safetensors", "ef" * 32, [1, 2])
    assert journal.get_snapshot("before-cats").lineage == (1, 2)
    assert journal.snapshots()[0] == snap
    with pytest.raises(sqlite3.IntegrityError):
        journal.add_snapshot("initial", "manual", "x.safetensors", "00" * 32, [])
    journal.add_event("audit", {"failing": [3]})
    journal.add_event("rollback", {"target": "edit 2"})
    assert [e.kind for e in journal.events()] == ["audit", "rollback"]
    assert journal.events("audit")[0].payload == {"failing": [3]}
    with pytest.raises(ValueError, match="unknown event kind"):
        journal.add_event("delete", {})


def test_rows_persist_and_wal_mode(tmp_path):
    path = tmp_path / "journal.sqlite"
    first = SQLiteJournal(path, create=True)
    edit_id = first.add_edit(draft(tags=("t",)))
    first.set_status([edit_id], jr.APPLIED, result={"wall_time_s": 0.5})
    first.close()
    second = SQLiteJournal(path)
    assert second.get_edit(edit_id).result == {"wall_time_s": 0.5}
    assert second.get_edit(edit_id).tags == ("t",)
    second.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
